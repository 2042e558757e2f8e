// Runs the committed corpus of the safetensors header fuzz target
// (common/model/safetensors_fuzz.cc) as a regression test.
#include <gtest/gtest.h>

#include "common/model/safetensors.h"
#include "tests/support/fuzz_corpus.h"

namespace {

TEST(SafetensorsFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts = kvstream::testing::RunFuzzCorpus(
      "common/model/safetensors_fuzz_corpus", [](const std::string& image) {
        return kvstream::model::ParseSafetensors(reinterpret_cast<const uint8_t*>(image.data()),
                                                 image.size(), "corpus")
            .status();
      });
  EXPECT_GE(counts.files, 8);
  EXPECT_GE(counts.valid, 3);
  EXPECT_GE(counts.bad, 5);
}

}  // namespace
