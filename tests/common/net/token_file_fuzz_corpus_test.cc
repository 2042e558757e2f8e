// Runs the committed corpus of the token-file fuzz target (common/net/token_file_fuzz.cc)
// as a regression test.
#include <gtest/gtest.h>

#include "common/net/auth.h"
#include "tests/support/fuzz_corpus.h"

namespace {

TEST(TokenFileFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts = kvstream::testing::RunFuzzCorpus(
      "common/net/token_file_fuzz_corpus", [](const std::string& text) {
        return kvstream::net::TokenAuthenticator::FromText(text, "corpus").status();
      });
  EXPECT_GE(counts.files, 20);
  EXPECT_GE(counts.valid, 4);
  EXPECT_GE(counts.bad, 8);
}

}  // namespace
