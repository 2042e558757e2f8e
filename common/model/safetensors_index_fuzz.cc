// libFuzzer target for the sharded weight index, model.safetensors.index.json
// (ParseSafetensorsIndex). Input: the index text.
//
// Invariants checked on every index that parses: each shard is named once, and is a
// plain file name beside the index (not empty, not "." or "..", no '/', no NUL), so
// OpenDir never opens a path outside the model directory or a directory.
//
// Build and run: docs/fuzzing.md. The committed corpus (safetensors_index_fuzz_corpus/)
// also runs as a regression test (tests/common/model/safetensors_index_fuzz_corpus_test.cc).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "common/base/fuzz_check.h"
#include "common/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto shards = kvstream::model::ParseSafetensorsIndex(text, "fuzz");
  if (!shards.ok()) return 0;
  std::set<std::string> seen;
  for (const std::string& s : *shards) {
    kvstream::base::FuzzCheck(!s.empty() && s != "." && s != "..");
    kvstream::base::FuzzCheck(s.find('/') == std::string::npos &&
                              s.find('\0') == std::string::npos);
    kvstream::base::FuzzCheck(seen.insert(s).second);
  }
  return 0;
}
