// Runs the committed corpus of the config.json fuzz target (common/model/config_fuzz.cc)
// as a regression test.
#include <gtest/gtest.h>

#include "common/model/config.h"
#include "tests/support/fuzz_corpus.h"

namespace {

TEST(ConfigFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts = kvstream::testing::RunFuzzCorpus(
      "common/model/config_fuzz_corpus", [](const std::string& text) {
        return kvstream::model::ModelConfig::FromJson(text, "corpus").status();
      });
  EXPECT_GE(counts.files, 12);
  EXPECT_GE(counts.valid, 4);
  EXPECT_GE(counts.bad, 8);
}

}  // namespace
