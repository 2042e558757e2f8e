// The per-request quality estimate on the bundled scout: exactly no loss for a lossless
// plan, more loss as the plan's bits drop, and loss when its selection drops slots.
#include "common/model/quality_probe.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/eval/tasks.h"
#include "common/model/chat.h"
#include "common/model/generate.h"
#include "common/model/tokenizer.h"

namespace kvstream::model {
namespace {

constexpr char kScout[] = "testdata/models/scout";

// Needle prompts as the edge builds them, whole (the last token included).
std::vector<ChatPrompt> Prompts(int n) {
  auto tok = Tokenizer::Load(absl::StrCat(kScout, "/tokenizer.json")).value();
  auto words = eval::LoadWords().value();
  eval::TaskGenerator gen(
      words, [&](const std::string& s) { return static_cast<int>(tok->Encode(s, false)->size()); });
  gen.set_single_token_names(true);
  eval::TaskOptions o;
  o.kind = "needle";
  o.num_examples = n;
  o.target_tokens = 256;
  o.seed = 91;
  std::vector<ChatPrompt> out;
  for (const eval::Example& ex : gen.Generate(o)) {
    out.push_back(
        BuildQaPrompt(*tok, ex.context, ex.question, {"Answer with the value from the context."})
            .value());
  }
  return out;
}

class QualityProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = Model::Load(kScout);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  // The whole prompt prefilled, caching all but its last token (whose logits the result
  // carries), as the edge's prefill does.
  absl::StatusOr<PrefillResult> PrefillButLast(const ChatPrompt& p) {
    PrefillOptions po;
    po.cache_tokens = static_cast<int>(p.tokens.size()) - 1;
    return model_->Prefill(p.tokens, po);
  }
  // The probe's estimate for each plan, summed over `prompts` (kept: every slot).
  std::vector<double> SummedKl(const std::vector<ChatPrompt>& prompts,
                               const std::vector<std::string>& specs) {
    std::vector<double> kl(specs.size(), 0);
    for (const ChatPrompt& p : prompts) {
      const std::vector<int32_t> head(p.tokens.begin(), p.tokens.end() - 1);
      auto pre = model_->Prefill(head);
      EXPECT_TRUE(pre.ok());
      auto probe = QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 4);
      EXPECT_TRUE(probe.ok()) << probe.status();
      for (size_t i = 0; i < specs.size(); ++i) {
        auto e = (*probe)->Estimate({}, codec::ParsePlan(specs[i]).value());
        EXPECT_TRUE(e.ok()) << e.status();
        kl[i] += e->kl;
      }
    }
    return kl;
  }
  std::unique_ptr<Model> model_;
};

TEST_F(QualityProbeTest, LosslessPlanIsExactlyNoLoss) {
  const ChatPrompt p = Prompts(1).at(0);
  const std::vector<int32_t> head(p.tokens.begin(), p.tokens.end() - 1);
  auto pre = model_->Prefill(head);
  ASSERT_TRUE(pre.ok());
  const int slots = pre->cache->size();
  auto probe = QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 4);
  ASSERT_TRUE(probe.ok()) << probe.status();
  ASSERT_EQ((*probe)->Steps().value(), 4);
  auto e = (*probe)->Estimate({}, codec::ParsePlan("raw").value());
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->kl, 0.0);
  EXPECT_EQ(e->agreement, 1.0);
  EXPECT_EQ(e->steps, 4);
  EXPECT_GT(e->p_top, 0.0);
  EXPECT_EQ(pre->cache->size(), slots) << "the probe must not change the cache it reads";
  // The reference's greedy tokens are what generation from the full cache gives.
  std::vector<int32_t> all(slots);
  for (int i = 0; i < slots; ++i) all[i] = i;
  SamplingOptions greedy;
  greedy.max_new_tokens = 4;
  auto g = Generate(*model_, *pre->cache->Copy(all).value(), p.tokens.back(), greedy);
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(g->tokens.size(), 4u);
  for (int s = 0; s < 4; ++s) EXPECT_EQ((*probe)->greedy()[s], g->tokens[s]) << s;
}

// The prefill's logits for the last prompt token stand in for the probe's first step:
// same greedy tokens, same estimates (up to float noise: another pass computed them).
TEST_F(QualityProbeTest, PrefillLogitsSaveTheFirstStep) {
  for (const ChatPrompt& p : Prompts(3)) {
    auto pre = PrefillButLast(p);
    ASSERT_TRUE(pre.ok()) << pre.status();
    auto plain = QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 4);
    auto saved =
        QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 4, {}, &pre->last_logits);
    ASSERT_TRUE(plain.ok() && saved.ok());
    ASSERT_TRUE((*plain)->Steps().ok() && (*saved)->Steps().ok());
    EXPECT_EQ((*plain)->greedy(), (*saved)->greedy());
    for (const char* spec : {"raw", "int4", "int2"}) {
      const auto a = (*plain)->Estimate({}, codec::ParsePlan(spec).value());
      const auto b = (*saved)->Estimate({}, codec::ParsePlan(spec).value());
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_NEAR(a->kl, b->kl, 1e-9 + 1e-6 * a->kl) << spec;
      EXPECT_EQ(a->agreement, b->agreement) << spec;
    }
    std::vector<float> wrong(7);
    EXPECT_EQ(
        QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 4, {}, &wrong).status().code(),
        absl::StatusCode::kInvalidArgument);
  }
}

// With one step the prefill's own logits are the reference (no pass): lossy plans get
// the estimates a computed reference gives, up to float noise, and a lossless plan over
// every slot is still exactly no loss.
TEST_F(QualityProbeTest, OneStepUsesThePrefillLogitsAsTheReference) {
  for (const ChatPrompt& p : Prompts(3)) {
    auto pre = PrefillButLast(p);
    ASSERT_TRUE(pre.ok()) << pre.status();
    auto computed = QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 1);
    auto saved =
        QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 1, {}, &pre->last_logits);
    ASSERT_TRUE(computed.ok() && saved.ok());
    EXPECT_EQ((*computed)->greedy(), (*saved)->greedy());
    for (const char* spec : {"int4", "int2", "int1"}) {
      const auto a = (*computed)->Estimate({}, codec::ParsePlan(spec).value());
      const auto b = (*saved)->Estimate({}, codec::ParsePlan(spec).value());
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_NEAR(a->kl, b->kl, 1e-5 + 1e-3 * a->kl) << spec;
      EXPECT_EQ(a->agreement, b->agreement) << spec;
    }
    const auto lossless = (*saved)->Estimate({}, codec::ParsePlan("raw").value());
    ASSERT_TRUE(lossless.ok());
    EXPECT_EQ(lossless->kl, 0.0);
    EXPECT_EQ(lossless->agreement, 1.0);
    EXPECT_GT(lossless->p_top, 0.0);
    EXPECT_LE(lossless->p_top, 1.0);
    // Keeping every slot but the first is not lossless: it is computed, and costs.
    std::vector<int32_t> most(pre->cache->size() - 1);
    for (size_t i = 0; i < most.size(); ++i) most[i] = static_cast<int32_t>(i + 1);
    const auto dropped = (*saved)->Estimate(most, codec::ParsePlan("raw").value());
    ASSERT_TRUE(dropped.ok());
    EXPECT_GT(dropped->kl, 0.0);
  }
}

// A probe made for four steps answers a one-step estimate from the prefill's logits
// alone, exactly as a one-step probe does, and computes the later steps only when an
// estimate first asks for them; an estimate may take fewer steps than the probe has.
TEST_F(QualityProbeTest, LaterStepsAreComputedWhenFirstAskedFor) {
  for (const ChatPrompt& p : Prompts(2)) {
    auto pre = PrefillButLast(p);
    ASSERT_TRUE(pre.ok()) << pre.status();
    auto one =
        QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 1, {}, &pre->last_logits);
    auto four =
        QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 4, {}, &pre->last_logits);
    ASSERT_TRUE(one.ok() && four.ok());
    EXPECT_EQ((*four)->greedy().size(), 1u) << "no step after the first before it is asked for";
    const double first_step = (*four)->reference_seconds();
    const codec::Plan int2 = codec::ParsePlan("int2").value();
    const auto a = (*one)->Estimate({}, int2);
    const auto b = (*four)->Estimate({}, int2, 1);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(b->steps, 1);
    EXPECT_EQ(a->kl, b->kl);
    EXPECT_EQ(a->p_top, b->p_top);
    EXPECT_EQ((*four)->greedy().size(), 1u);
    // Two of the four steps, then all four: the same reference, the same first steps.
    const auto two = (*four)->Estimate({}, int2, 2);
    ASSERT_TRUE(two.ok());
    EXPECT_EQ(two->steps, 2);
    EXPECT_EQ((*four)->greedy().size(), 4u);
    EXPECT_GT((*four)->reference_seconds(), first_step);
    const auto all = (*four)->Estimate({}, int2);
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(all->steps, 4);
    EXPECT_EQ(all->confidence, a->confidence) << "the confidence is the first step's";
    // A one-step estimate after the later steps were computed: the same reference.
    const auto again = (*four)->Estimate({}, int2, 1);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->kl, b->kl);
    EXPECT_EQ(again->p_top, b->p_top);
    // And on a fresh probe whose first estimate took two steps.
    auto fresh =
        QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 4, {}, &pre->last_logits);
    ASSERT_TRUE(fresh.ok() && (*fresh)->Estimate({}, int2, 2).ok());
    const auto after_two = (*fresh)->Estimate({}, int2, 1);
    ASSERT_TRUE(after_two.ok());
    EXPECT_EQ(after_two->kl, a->kl);
    EXPECT_EQ(after_two->p_top, a->p_top);
    auto computed = QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 4);
    ASSERT_TRUE(computed.ok() && (*computed)->Steps().ok());
    EXPECT_EQ((*computed)->greedy(), (*four)->greedy());
    const auto same = (*computed)->Estimate({}, int2);
    ASSERT_TRUE(same.ok());
    EXPECT_NEAR(same->kl, all->kl, 1e-9 + 1e-6 * all->kl);
    EXPECT_EQ((*four)->Steps(9).value(), 4) << "at most the probe's steps";
  }
}

TEST_F(QualityProbeTest, LossGrowsAsBitsDrop) {
  const std::vector<std::string> specs = {"int8", "int4", "int3", "int2", "int1"};
  const std::vector<double> kl = SummedKl(Prompts(4), specs);
  for (size_t i = 0; i + 1 < specs.size(); ++i) {
    EXPECT_LT(kl[i], kl[i + 1]) << specs[i] << " against " << specs[i + 1];
  }
  EXPECT_GT(kl[0], 0.0) << "INT8 is not lossless";
}

TEST_F(QualityProbeTest, DroppedSlotsAreSeen) {
  const ChatPrompt p = Prompts(1).at(0);
  const std::vector<int32_t> head(p.tokens.begin(), p.tokens.end() - 1);
  auto pre = model_->Prefill(head);
  ASSERT_TRUE(pre.ok());
  auto probe = QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 2);
  ASSERT_TRUE(probe.ok());
  // Keep the first slot (the attention sink) and then every other slot, every fourth,
  // every sixteenth: raw values, so only the selection loses.
  std::vector<double> kl;
  for (int stride : {1, 2, 4, 16}) {
    std::vector<int32_t> kept;
    for (int i = 0; i < pre->cache->size(); i += stride) kept.push_back(i);
    auto e = (*probe)->Estimate(kept, codec::ParsePlan("raw").value());
    ASSERT_TRUE(e.ok()) << e.status();
    kl.push_back(e->kl);
  }
  // Dropping slots is seen; how much is not monotone in the stride once the needle's
  // slots are gone (the distribution is then wrong in different ways).
  EXPECT_EQ(kl[0], 0.0);
  for (size_t i = 1; i < kl.size(); ++i) EXPECT_GT(kl[i], 0.01) << i;
}

TEST_F(QualityProbeTest, BadStepsAreRefused) {
  const ChatPrompt p = Prompts(1).at(0);
  const std::vector<int32_t> head(p.tokens.begin(), p.tokens.end() - 1);
  auto pre = model_->Prefill(head);
  ASSERT_TRUE(pre.ok());
  EXPECT_EQ(QualityProbe::Create(*model_, *pre->cache, p.tokens.back(), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvstream::model
