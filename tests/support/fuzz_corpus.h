// Runs a committed fuzz corpus as a regression test: every file goes through the fuzz
// target's entry point, which aborts on a broken invariant, and files named by their
// role are checked against the parser itself: valid_* must parse, bad_* must be refused.
// Hash-named files are what the fuzzer kept (-merge=1); they only have to run.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include "absl/status/status.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace kvstream::testing {

struct CorpusCounts {
  int files = 0;
  int valid = 0;
  int bad = 0;
};

inline std::string ReadCorpusFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// `parse` is the parser the target exercises, applied to one file's bytes.
inline CorpusCounts RunFuzzCorpus(const std::filesystem::path& dir,
                                  const std::function<absl::Status(const std::string&)>& parse) {
  CorpusCounts counts;
  EXPECT_TRUE(std::filesystem::is_directory(dir)) << dir << ": run from the repository root";
  if (!std::filesystem::is_directory(dir)) return counts;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const std::string data = ReadCorpusFile(entry.path());
    SCOPED_TRACE(entry.path().string());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    ++counts.files;
    if (name.rfind("valid_", 0) == 0) {
      const absl::Status st = parse(data);
      EXPECT_TRUE(st.ok()) << st;
      ++counts.valid;
    } else if (name.rfind("bad_", 0) == 0) {
      const absl::Status st = parse(data);
      EXPECT_FALSE(st.ok()) << "accepted";
      ++counts.bad;
    }
  }
  return counts;
}

}  // namespace kvstream::testing
