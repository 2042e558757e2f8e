// Runs the committed seed corpus of the chunk decoder's fuzz target as a regression test:
// every file goes through the fuzz entry point (which aborts on a broken invariant), and
// the seeds named valid_* must also decode cleanly.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/codec/chunk.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(ChunkFuzzCorpusTest, EverySeedRunsAndValidSeedsDecode) {
  const std::filesystem::path dir = "common/codec/chunk_fuzz_corpus";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << "run from the repository root";
  int files = 0, valid = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string data = ReadFile(entry.path());
    SCOPED_TRACE(entry.path().string());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    ++files;
    if (entry.path().filename().string().rfind("valid_", 0) == 0) {
      kvstream::v1::KvChunk chunk;
      ASSERT_TRUE(chunk.ParseFromArray(data.data() + 1, static_cast<int>(data.size() - 1)));
      kvstream::codec::ChunkLimits limits;
      limits.max_position = 1 << 16;
      auto decoded = kvstream::codec::DecodeChunk(chunk, limits);
      EXPECT_TRUE(decoded.ok()) << decoded.status();
      ++valid;
    }
  }
  EXPECT_GE(files, 8);
  EXPECT_GE(valid, 4);
}

}  // namespace
