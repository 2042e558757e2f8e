// Runs the committed corpus of the plan-string fuzz target (common/codec/plan_fuzz.cc) as a
// regression test.
#include <gtest/gtest.h>

#include "common/codec/spec.h"
#include "tests/support/fuzz_corpus.h"

namespace {

TEST(PlanFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts = kvstream::testing::RunFuzzCorpus(
      "common/codec/plan_fuzz_corpus",
      [](const std::string& text) { return kvstream::codec::ParsePlan(text).status(); });
  EXPECT_GE(counts.files, 12);
  EXPECT_GE(counts.valid, 5);
  EXPECT_GE(counts.bad, 5);
}

}  // namespace
