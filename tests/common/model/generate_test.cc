#include "common/model/generate.h"

#include <gtest/gtest.h>

#include <map>

#include "tests/common/model/tiny_model.h"

namespace kvstream::model {
namespace {

TEST(PickTokenTest, GreedySamplingAndNucleus) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 3.0f};
  SamplingOptions o;
  uint64_t state = 1;
  EXPECT_EQ(PickToken(logits, o, &state), 1);  // argmax, ties to the lowest id
  o.temperature = 1.0;
  o.seed = 7;
  std::map<int, int> seen;
  state = 7;
  for (int i = 0; i < 2000; ++i) ++seen[PickToken(logits, o, &state)];
  EXPECT_GT(seen[0], 20);  // every token reachable at top_p = 1
  EXPECT_NEAR(seen[1] / 2000.0, std::exp(3.0) / (1 + 2 * std::exp(3.0) + std::exp(1.0)), 0.04);
  o.top_p = 0.8;  // the two top tokens carry ~0.89 of the mass: nothing else is drawn
  seen.clear();
  for (int i = 0; i < 500; ++i) ++seen[PickToken(logits, o, &state)];
  EXPECT_EQ(seen.count(0) + seen.count(2), 0u);
  // Same seed, same draws.
  uint64_t a = 3, b = 3;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(PickToken(logits, o, &a), PickToken(logits, o, &b));
}

TEST(GenerateTest, GreedyFromACacheEqualsArgmaxOfFullRecompute) {
  const std::string dir = testing::WriteTinyModel("gen_model", testing::TinyConfig(), 9);
  auto model = Model::Load(dir);
  ASSERT_TRUE(model.ok());
  std::vector<int32_t> prompt = {5, 17, 33, 2, 71, 8, 90, 14};
  auto pre = (*model)->Prefill(absl::MakeSpan(prompt).subspan(0, prompt.size() - 1));
  ASSERT_TRUE(pre.ok());
  SamplingOptions o;
  o.max_new_tokens = 6;
  std::vector<int32_t> streamed;
  auto g = Generate(**model, *pre->cache, prompt.back(), o, [&](int32_t t) {
    streamed.push_back(t);
    return true;
  });
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->tokens, streamed);
  EXPECT_EQ(g->stop_reason, "max_tokens");
  // Reference: extend the sequence token by token with full recomputes.
  std::vector<int32_t> seq = prompt;
  for (int i = 0; i < 6; ++i) {
    auto logits = (*model)->FullLogits(seq);
    const float* last = logits->data() + (seq.size() - 1) * 97;
    seq.push_back(static_cast<int32_t>(std::max_element(last, last + 97) - last));
  }
  EXPECT_EQ(g->tokens, std::vector<int32_t>(seq.begin() + 8, seq.end()));
  // Cancelling from the callback stops at once; stop tokens end generation unemitted.
  auto pre2 = (*model)->Prefill(absl::MakeSpan(prompt).subspan(0, prompt.size() - 1));
  auto c = Generate(**model, *pre2->cache, prompt.back(), o, [](int32_t) { return false; });
  EXPECT_EQ(c->tokens.size(), 1u);
  EXPECT_EQ(c->stop_reason, "cancelled");
  auto pre3 = (*model)->Prefill(absl::MakeSpan(prompt).subspan(0, prompt.size() - 1));
  o.stop_tokens = {g->tokens[2]};
  auto s = Generate(**model, *pre3->cache, prompt.back(), o);
  EXPECT_EQ(s->stop_reason, "stop_token");
  EXPECT_EQ(s->tokens, std::vector<int32_t>(g->tokens.begin(), g->tokens.begin() + 2));
  o.max_new_tokens = 0;
  EXPECT_EQ(Generate(**model, *pre3->cache, 1, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The first step's logits go to `accept_first` once, before any token is picked: a
// rejection emits nothing, and an acceptance leaves the answer as it was.
TEST(GenerateTest, AcceptFirstSeesTheFirstLogitsOnceAndCanRejectThem) {
  const std::string dir = testing::WriteTinyModel("gen_model", testing::TinyConfig(), 9);
  auto model = Model::Load(dir);
  ASSERT_TRUE(model.ok());
  const std::vector<int32_t> prompt = {5, 17, 33, 2, 71, 8, 90, 14};
  auto run = [&](const std::function<bool(absl::Span<const float>)>& accept,
                 std::vector<int32_t>* streamed) {
    auto pre = (*model)->Prefill(absl::MakeConstSpan(prompt).subspan(0, prompt.size() - 1));
    EXPECT_TRUE(pre.ok());
    SamplingOptions o;
    o.max_new_tokens = 4;
    return Generate(
        **model, *pre->cache, prompt.back(), o,
        [streamed](int32_t t) {
          streamed->push_back(t);
          return true;
        },
        accept);
  };
  std::vector<int32_t> plain_tokens, accepted_tokens, rejected_tokens;
  auto plain = run(nullptr, &plain_tokens);
  ASSERT_TRUE(plain.ok()) << plain.status();
  int calls = 0;
  int32_t argmax = -1;
  auto accepted = run(
      [&](absl::Span<const float> logits) {
        ++calls;
        argmax =
            static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        return true;
      },
      &accepted_tokens);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(argmax, plain->tokens.front());
  EXPECT_EQ(accepted->tokens, plain->tokens);
  auto rejected = run([](absl::Span<const float>) { return false; }, &rejected_tokens);
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  EXPECT_TRUE(rejected->tokens.empty());
  EXPECT_TRUE(rejected_tokens.empty());
  EXPECT_EQ(rejected->stop_reason, "rejected");
}

}  // namespace
}  // namespace kvstream::model
