// Runs the committed corpus of the sharded-index fuzz target
// (common/model/safetensors_index_fuzz.cc) as a regression test.
#include <gtest/gtest.h>

#include "common/model/safetensors.h"
#include "tests/support/fuzz_corpus.h"

namespace {

TEST(SafetensorsIndexFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts = kvstream::testing::RunFuzzCorpus(
      "common/model/safetensors_index_fuzz_corpus", [](const std::string& text) {
        return kvstream::model::ParseSafetensorsIndex(text, "corpus").status();
      });
  EXPECT_GE(counts.files, 8);
  EXPECT_GE(counts.valid, 2);
  EXPECT_GE(counts.bad, 6);
}

}  // namespace
