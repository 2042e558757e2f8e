#include "common/select/select.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace kvstream::select {
namespace {

// Prompt: 4 template tokens, context [4, 44), question [44, 50), 2 suffix tokens.
PromptSpans Spans() { return {52, 4, 44, 44, 50}; }

AttentionStats Flat(int layers = 2, int heads = 3) {
  AttentionStats s;
  s.num_layers = layers;
  s.num_heads = heads;
  s.num_tokens = Spans().num_tokens;
  s.question.assign(s.size(), 0.01f);
  s.question_tail.assign(s.size(), 0.01f);
  s.window.assign(s.size(), 0.01f);
  s.cumulative.assign(s.size(), 0.01f);
  s.window_size = 8;
  return s;
}

void Set(AttentionStats& s, std::vector<float>& a, int token, float v, int only_layer = -1) {
  for (int l = 0; l < s.num_layers; ++l) {
    if (only_layer >= 0 && l != only_layer) continue;
    for (int h = 0; h < s.num_heads; ++h) a[(l * s.num_heads + h) * s.num_tokens + token] = v;
  }
}

std::set<int> ContextKept(const Selection& sel) {
  std::set<int> out;
  for (int p : sel.kept) {
    if (p >= 4 && p < 44) out.insert(p);
  }
  return out;
}

TEST(SelectTest, CountsAndAlwaysKeptTokensForEveryPolicy) {
  const AttentionStats s = Flat();
  for (Policy p : {Policy::kFull, Policy::kQ2C, Policy::kQ2CQuestion, Policy::kSnapKV, Policy::kH2O,
                   Policy::kRandom}) {
    for (double r : {0.0, 0.25, 0.5, 0.75, 1.0}) {
      SCOPED_TRACE(std::string(PolicyName(p)) + " " + std::to_string(r));
      SelectOptions o;
      o.policy = p;
      o.retention = r;
      auto sel = Select(s, Spans(), o);
      ASSERT_TRUE(sel.ok()) << sel.status();
      const int expected_ctx = p == Policy::kFull ? 40 : static_cast<int>(std::lround(r * 40));
      EXPECT_EQ(sel->context_kept, expected_ctx);
      EXPECT_EQ(static_cast<int>(ContextKept(*sel).size()), expected_ctx);
      EXPECT_EQ(static_cast<int>(sel->kept.size()), 12 + expected_ctx);
      EXPECT_TRUE(std::is_sorted(sel->kept.begin(), sel->kept.end()));
      EXPECT_EQ(std::adjacent_find(sel->kept.begin(), sel->kept.end()), sel->kept.end());
      for (int t : {0, 1, 2, 3, 44, 45, 49, 50, 51}) {
        EXPECT_TRUE(std::binary_search(sel->kept.begin(), sel->kept.end(), t)) << t;
      }
    }
  }
}

TEST(SelectTest, SinkTokensAreAlwaysKept) {
  AttentionStats s = Flat();
  Set(s, s.question_tail, 30, 1.0f);
  SelectOptions o;
  o.retention = 0.1;  // 4 tokens
  o.sink_tokens = 3;
  auto sel = Select(s, Spans(), o);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{4, 5, 6, 30}));
  o.sink_tokens = 10;  // sinks beyond the budget take the whole budget
  sel = Select(s, Spans(), o);
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{4, 5, 6, 7}));
}

TEST(SelectTest, Q2CKeepsWhatTheQuestionAttendsTo) {
  AttentionStats s = Flat();
  Set(s, s.question_tail, 10, 0.5f);
  Set(s, s.question_tail, 20, 0.4f, /*only_layer=*/1);  // one layer alone can carry a token
  Set(s, s.question_tail, 40, 0.3f);
  Set(s, s.window, 5, 0.9f);  // distractors in the other statistics
  Set(s, s.cumulative, 6, 0.9f);
  SelectOptions o;
  o.retention = 3.0 / 40;
  auto sel = Select(s, Spans(), o);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{10, 20, 40}));
}

// Where only the rows after the question (the answer template and the last prompt
// token) point at the answer, q2c keeps it and the question-rows-only variant does not.
TEST(SelectTest, Q2CCountsTheRowsAfterTheQuestion) {
  AttentionStats s = Flat();
  Set(s, s.question, 12, 0.6f);       // what the question rows look at
  Set(s, s.question_tail, 12, 0.6f);  // the tail sum includes the question rows...
  Set(s, s.question_tail, 33, 0.9f);  // ...and the last row, which points at the answer
  SelectOptions o;
  o.retention = 1.0 / 40;
  o.policy = Policy::kQ2C;
  EXPECT_EQ(ContextKept(*Select(s, Spans(), o)), (std::set<int>{33}));
  o.policy = Policy::kQ2CQuestion;
  EXPECT_EQ(ContextKept(*Select(s, Spans(), o)), (std::set<int>{12}));
  EXPECT_EQ(ParsePolicy("q2c-question").value(), Policy::kQ2CQuestion);
}

// Statistics from a prefill of the whole prompt cover its last token, one more than the
// spans a selection over the cache uses; fewer than the spans is an error.
TEST(SelectTest, StatisticsMayCoverTheLastTokenBeyondTheSpans) {
  AttentionStats s = Flat();
  PromptSpans cache = Spans();
  cache.num_tokens -= 1;
  SelectOptions o;
  o.retention = 0.5;
  auto sel = Select(s, cache, o);
  ASSERT_TRUE(sel.ok()) << sel.status();
  EXPECT_LT(sel->kept.back(), cache.num_tokens);
  PromptSpans longer = Spans();
  longer.num_tokens += 1;
  EXPECT_EQ(Select(s, longer, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SelectTest, SnapKVPoolsWindowVotesAlongTheSequence) {
  AttentionStats s = Flat();
  Set(s, s.window, 20, 1.0f);  // one spike: max pooling of 3 spreads it to 19..21
  Set(s, s.window, 30, 0.6f);
  Set(s, s.question, 8, 5.0f);
  SelectOptions o;
  o.policy = Policy::kSnapKV;
  o.snapkv_kernel = 3;
  o.retention = 3.0 / 40;
  auto sel = Select(s, Spans(), o);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{19, 20, 21}));
  o.retention = 6.0 / 40;
  sel = Select(s, Spans(), o);
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{19, 20, 21, 29, 30, 31}));
  o.snapkv_kernel = 1;  // no pooling: the spikes themselves, then ties to the lowest index
  o.retention = 2.0 / 40;
  sel = Select(s, Spans(), o);
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{20, 30}));
  // Two spikes two apart: average pooling singles out the token between them, max
  // pooling ties 19..23 and so keeps the lowest.
  Set(s, s.window, 22, 1.0f);
  o.snapkv_kernel = 3;
  o.retention = 1.0 / 40;
  o.snapkv_pooling = Pooling::kAvg;
  sel = Select(s, Spans(), o);
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{21}));
  o.snapkv_pooling = Pooling::kMax;
  sel = Select(s, Spans(), o);
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{19}));
  o.snapkv_pooling = Pooling::kAvg;
  o.snapkv_kernel = 4;
  EXPECT_EQ(Select(s, Spans(), o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SelectTest, H2OKeepsRecentTokensPlusHeavyHitters) {
  AttentionStats s = Flat();
  Set(s, s.cumulative, 7, 2.0f);
  Set(s, s.cumulative, 15, 1.5f);
  Set(s, s.cumulative, 43, 3.0f);  // already in the recent window
  SelectOptions o;
  o.policy = Policy::kH2O;
  o.retention = 4.0 / 40;
  auto sel = Select(s, Spans(), o);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{42, 43, 7, 15}));
  o.h2o_recent_share = 0.0;
  sel = Select(s, Spans(), o);
  EXPECT_EQ(ContextKept(*sel), (std::set<int>{7, 15, 43, 4}));  // ties -> lowest position
}

TEST(SelectTest, RandomIsDeterministicPerSeedAndCoversTheContext) {
  const AttentionStats none;  // random needs no statistics
  SelectOptions o;
  o.policy = Policy::kRandom;
  o.retention = 0.5;
  o.seed = 9;
  auto a = Select(none, Spans(), o), b = Select(none, Spans(), o);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->kept, b->kept);
  o.seed = 10;
  auto c = Select(none, Spans(), o);
  EXPECT_NE(a->kept, c->kept);
  // Over many seeds every context token is picked about half the time.
  std::vector<int> hits(52, 0);
  for (uint64_t seed = 0; seed < 400; ++seed) {
    o.seed = seed;
    for (int t : ContextKept(*Select(none, Spans(), o))) ++hits[t];
  }
  for (int t = 4; t < 44; ++t) {
    EXPECT_GT(hits[t], 140) << t;
    EXPECT_LT(hits[t], 260) << t;
  }
}

TEST(SelectTest, ClearErrors) {
  SelectOptions o;
  o.retention = 0.5;
  AttentionStats s = Flat();
  s.question_tail.clear();
  auto r = Select(s, Spans(), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(
      r.status().message().find("q2c needs the question-through-last-row attention statistics"),
      std::string::npos)
      << r.status();
  o.retention = 1.5;
  EXPECT_EQ(Select(Flat(), Spans(), o).status().code(), absl::StatusCode::kInvalidArgument);
  o.retention = 0.5;
  PromptSpans bad = Spans();
  bad.context_end = 60;
  EXPECT_EQ(Select(Flat(), bad, o).status().code(), absl::StatusCode::kInvalidArgument);
  PromptSpans no_q = Spans();
  no_q.question_begin = no_q.question_end = 50;
  EXPECT_NE(Select(Flat(), no_q, o).status().message().find("non-empty question"),
            std::string::npos);
  EXPECT_EQ(ParsePolicy("snapkv").value(), Policy::kSnapKV);
  EXPECT_NE(ParsePolicy("x").status().message().find("found 'x'"), std::string::npos);
}

// The importance order a progressive sender follows: the tokens outside the context
// first, then the context tokens by score, and the tiers cut from it.
TEST(SelectTest, RankedListsTheKeptTokensByImportanceAndTiersSplitIt) {
  AttentionStats s = Flat();
  // Descending Q2C scores at 30, 10, 20; everything else ties and goes by position.
  Set(s, s.question_tail, 30, 0.9f);
  Set(s, s.question_tail, 10, 0.8f);
  Set(s, s.question_tail, 20, 0.7f);
  SelectOptions o;
  o.policy = Policy::kQ2C;
  o.retention = 0.5;
  auto sel = Select(s, Spans(), o);
  ASSERT_TRUE(sel.ok()) << sel.status();
  std::vector<int32_t> sorted = sel->ranked;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, sel->kept);  // the same positions
  EXPECT_EQ(sel->always_kept, 12);
  const std::vector<int32_t> outside = {0, 1, 2, 3, 44, 45, 46, 47, 48, 49, 50, 51};
  EXPECT_EQ(std::vector<int32_t>(sel->ranked.begin(), sel->ranked.begin() + 12), outside);
  EXPECT_EQ(sel->ranked[12], 30);
  EXPECT_EQ(sel->ranked[13], 10);
  EXPECT_EQ(sel->ranked[14], 20);
  EXPECT_EQ(sel->ranked[15], 4);  // then ties, lowest position first
  // 20 context tokens in 3 tiers: 7, 7, 6, the first with the 12 outside the context.
  const Tiers tiers = SplitTiers(*sel, 3);
  EXPECT_EQ(tiers.sizes, (std::vector<uint32_t>{19, 7, 6}));
  ASSERT_EQ(tiers.positions.size(), sel->kept.size());
  size_t at = 0;
  for (size_t t = 0; t < tiers.sizes.size(); ++t) {
    const auto begin = tiers.positions.begin() + at, end = begin + tiers.sizes[t];
    EXPECT_TRUE(std::is_sorted(begin, end)) << "tier " << t;
    std::vector<int32_t> want(sel->ranked.begin() + at, sel->ranked.begin() + at + tiers.sizes[t]);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(std::vector<int32_t>(begin, end), want) << "tier " << t;
    at += tiers.sizes[t];
  }
  EXPECT_TRUE(std::binary_search(tiers.positions.begin(), tiers.positions.begin() + 19, 30));
  // More tiers than ranked context tokens: one per token.
  o.retention = 0.05;  // 2 context tokens
  auto few = Select(s, Spans(), o);
  ASSERT_TRUE(few.ok());
  EXPECT_EQ(SplitTiers(*few, 8).sizes, (std::vector<uint32_t>{13, 1}));
  // Without a selector: the context in prompt order.
  const Selection all = KeepAll(Spans());
  EXPECT_EQ(all.kept.size(), 52u);
  EXPECT_EQ(all.always_kept, 12);
  EXPECT_EQ(all.ranked[12], 4);
  EXPECT_EQ(all.ranked.back(), 43);
  EXPECT_EQ(SplitTiers(all, 4).sizes, (std::vector<uint32_t>{22, 10, 10, 10}));
}

}  // namespace
}  // namespace kvstream::select
