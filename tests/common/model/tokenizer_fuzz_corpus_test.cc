// Runs the committed corpus of the tokenizer.json fuzz target
// (common/model/tokenizer_fuzz.cc) as a regression test. A file is the tokenizer.json
// text, optionally followed by a NUL byte and a text to encode.
#include <gtest/gtest.h>

#include "common/model/tokenizer.h"
#include "tests/support/fuzz_corpus.h"

namespace {

TEST(TokenizerFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts = kvstream::testing::RunFuzzCorpus(
      "common/model/tokenizer_fuzz_corpus", [](const std::string& data) {
        const std::string json = data.substr(0, data.find('\0'));
        return kvstream::model::Tokenizer::FromJson(json, "corpus").status();
      });
  EXPECT_GE(counts.files, 10);
  EXPECT_GE(counts.valid, 5);
  EXPECT_GE(counts.bad, 5);
}

}  // namespace
