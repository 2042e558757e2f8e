// Runs the committed corpus of the SessionOpen fuzz target (common/pipeline/session_open_fuzz.cc)
// as a regression test. A file is a control byte (bit 0: the 64-position config; bit 1: the small
// token limits; bit 2: also a Commit whose answer check is the SessionOpen's own prompt_tokens and
// seed), then a serialized SessionOpen.
#include <gtest/gtest.h>

#include "common/model/config.h"
#include "common/pipeline/session_open.h"
#include "tests/support/fuzz_corpus.h"

namespace {

using kvstream::model::ModelConfig;
using kvstream::pipeline::OpenLimits;

TEST(SessionOpenFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  // The fuzz target's model is the tiny scout's config.
  auto scout = ModelConfig::Load("testdata/models/scout/config.json");
  ASSERT_TRUE(scout.ok()) << scout.status();
  const auto counts = kvstream::testing::RunFuzzCorpus(
      "common/pipeline/session_open_fuzz_corpus", [&](const std::string& data) -> absl::Status {
        kvstream::v1::SessionOpen open;
        if (data.empty() || !open.ParseFromString(data.substr(1))) {
          return absl::InvalidArgumentError("not a SessionOpen");
        }
        ModelConfig c = *scout;
        if (data[0] & 1) c.max_position_embeddings = 64;
        const OpenLimits limits = (data[0] & 2) ? OpenLimits{16, 16} : OpenLimits{};
        auto checked = kvstream::pipeline::CheckSessionOpen(open, c, "scout", limits);
        if (!checked.ok() || !(data[0] & 4)) return checked.status();
        kvstream::v1::Commit commit;
        commit.mutable_check()->set_expected_token(static_cast<int32_t>(open.seed()));
        *commit.mutable_check()->mutable_prompt_tokens() = open.prompt_tokens();
        return kvstream::pipeline::CheckAnswerCheck(commit, open.mode(), c, "scout", *checked);
      });
  EXPECT_GE(counts.files, 14);
  EXPECT_GE(counts.valid, 5);
  EXPECT_GE(counts.bad, 8);
}

}  // namespace
