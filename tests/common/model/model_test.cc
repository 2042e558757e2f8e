#include "common/model/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <thread>

#include "common/model/random_model.h"
#include "common/model/transformer.h"
#include "tests/common/model/tiny_model.h"

namespace kvstream::model {
namespace {

using testing::TinyConfig;
using testing::WriteTinyModel;

constexpr float kTol = 1e-4f;  // float32 cached vs full-recompute logits

std::vector<int32_t> Tokens(int n, int seed = 1) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + seed * 11 + i * i) % 96;
  return t;
}

float MaxDiff(const std::vector<float>& a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

class ModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(WriteTinyModel("tiny_model", TinyConfig(), 5));
    auto m = Model::Load(*dir_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }
  static Model* model_;
  static std::string* dir_;
  const int V = 97;
};
Model* ModelTest::model_ = nullptr;
std::string* ModelTest::dir_ = nullptr;

TEST_F(ModelTest, PrefillMatchesFullRecompute) {
  const auto tokens = Tokens(40);
  auto full = model_->FullLogits(tokens);
  ASSERT_TRUE(full.ok()) << full.status();
  auto pre = model_->Prefill(tokens);
  ASSERT_TRUE(pre.ok()) << pre.status();
  EXPECT_LT(MaxDiff(pre->last_logits, full->data() + 39 * V, V), kTol);
  EXPECT_EQ(pre->cache->size(), 40);
  EXPECT_EQ(pre->cache->next_position(), 40);
}

TEST_F(ModelTest, IncrementalDecodeMatchesFullRecompute) {
  const auto tokens = Tokens(30);
  auto full = model_->FullLogits(tokens);
  ASSERT_TRUE(full.ok());
  auto pre = model_->Prefill(absl::MakeSpan(tokens).subspan(0, 20));
  ASSERT_TRUE(pre.ok());
  for (int i = 20; i < 30; ++i) {
    auto logits = model_->Extend(*pre->cache, {tokens[i]}, {i});
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_LT(MaxDiff(*logits, full->data() + i * V, V), kTol) << "token " << i;
  }
}

TEST_F(ModelTest, QueryBlockSizeDoesNotChangeResults) {
  const auto tokens = Tokens(50);
  PrefillOptions a, b;
  a.collect_stats = b.collect_stats = true;
  a.spans = b.spans = {50, 5, 40, 40, 48};
  a.window = b.window = 8;
  a.query_block = 7;
  b.query_block = 256;
  auto ra = model_->Prefill(tokens, a), rb = model_->Prefill(tokens, b);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_LT(MaxDiff(ra->last_logits, rb->last_logits.data(), V), kTol);
  ASSERT_EQ(ra->stats.cumulative.size(), rb->stats.cumulative.size());
  EXPECT_LT(MaxDiff(ra->stats.cumulative, rb->stats.cumulative.data(), rb->stats.cumulative.size()),
            1e-4);
  EXPECT_LT(MaxDiff(ra->stats.question, rb->stats.question.data(), rb->stats.question.size()),
            1e-5);
}

TEST_F(ModelTest, AttentionStatisticsSumToTheirQueryRowCounts) {
  const auto tokens = Tokens(60);
  PrefillOptions o;
  o.collect_stats = true;
  o.spans = {60, 4, 50, 50, 57};
  o.window = 10;
  auto r = model_->Prefill(tokens, o);
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& s = r->stats;
  ASSERT_EQ(s.num_layers, 2);
  ASSERT_EQ(s.num_heads, 4);
  ASSERT_EQ(s.num_tokens, 60);
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 4; ++h) {
      double c = 0, w = 0, q = 0;
      for (int t = 0; t < 60; ++t) {
        c += s.at(s.cumulative, l, h, t);
        w += s.at(s.window, l, h, t);
        q += s.at(s.question, l, h, t);
        // Causality: question rows (50..56) put no mass on later keys.
        if (t >= 57) {
          EXPECT_EQ(s.at(s.question, l, h, t), 0.0f);
        }
      }
      EXPECT_NEAR(c, 60.0, 1e-3);  // every query row's probabilities sum to 1
      EXPECT_NEAR(w, 10.0, 1e-4);
      EXPECT_NEAR(q, 7.0, 1e-4);
    }
  }
}

// Selection statistics see the whole prompt: the question-through-last-row and window
// sums include the last prompt row (checked against each layer's full causal attention
// from ForwardHidden), while the cache stops before the last token, as a Prefill of
// the prompt without it would build it.
TEST_F(ModelTest, SelectionPrefillCountsTheLastPromptRow) {
  const int n = 40, window = 5;
  const auto tokens = Tokens(n);
  const select::PromptSpans spans{n, 4, 30, 30, 36};  // question [30, 36), template tail 36..39
  auto r = PrefillForSelection(*model_, tokens, spans, window);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->cache->size(), n - 1);
  EXPECT_EQ(r->cache->next_position(), n - 1);
  ASSERT_EQ(r->stats.num_tokens, n);

  const ModelConfig c = ModelConfig::Load(*dir_ + "/config.json").value();
  auto set = WeightSet::OpenDir(*dir_).value();
  const Weights w = LoadWeights(c, *set, torch::TensorOptions().dtype(torch::kFloat32)).value();
  std::vector<torch::Tensor> attention;  // per layer [1, heads, n, n]
  torch::NoGradGuard no_grad;
  ForwardHidden(c, w,
                torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end())).view({1, n}),
                &attention);
  ASSERT_EQ(static_cast<int>(attention.size()), c.num_layers);
  const auto& s = r->stats;
  float tail_err = 0, window_err = 0, question_err = 0, last_row_mass = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    for (int h = 0; h < c.num_heads; ++h) {
      const torch::Tensor a = attention[l][0][h];  // [n queries, n keys]
      const torch::Tensor tail = a.narrow(0, 30, n - 30).sum(0),
                          win = a.narrow(0, n - window, window).sum(0);
      const torch::Tensor question = a.narrow(0, 30, 6).sum(0);
      for (int t = 0; t < n; ++t) {
        tail_err =
            std::max(tail_err, std::fabs(s.at(s.question_tail, l, h, t) - tail[t].item<float>()));
        window_err =
            std::max(window_err, std::fabs(s.at(s.window, l, h, t) - win[t].item<float>()));
        question_err = std::max(question_err,
                                std::fabs(s.at(s.question, l, h, t) - question[t].item<float>()));
      }
      last_row_mass = std::max(last_row_mass, a[n - 1].narrow(0, 0, 30).sum().item<float>());
    }
  }
  EXPECT_LT(tail_err, 1e-4);
  EXPECT_LT(window_err, 1e-4);
  EXPECT_LT(question_err, 1e-4);
  EXPECT_GT(last_row_mass, 1e-2)
      << "the last row must put some mass on the context for the check to mean anything";

  // The cache is the one the prompt without its last token builds.
  auto head = model_->Prefill(absl::MakeConstSpan(tokens).subspan(0, n - 1));
  ASSERT_TRUE(head.ok());
  const size_t numel = static_cast<size_t>(c.num_kv_heads) * (n - 1) * c.head_dim;
  std::vector<float> k0(numel), v0(numel), k1(numel), v1(numel);
  for (int l = 0; l < c.num_layers; ++l) {
    ASSERT_TRUE(head->cache->ExportLayer(l, 0, n - 1, k0.data(), v0.data()).ok());
    ASSERT_TRUE(r->cache->ExportLayer(l, 0, n - 1, k1.data(), v1.data()).ok());
    EXPECT_LT(MaxDiff(k0, k1.data(), numel), kTol);
    EXPECT_LT(MaxDiff(v0, v1.data(), numel), kTol);
  }
}

// Eight threads prefilling and extending their own caches at once get what one thread
// gets alone (the daemons' model workers share one Model); intra-op threads may split
// the sums differently, hence a float32 rounding tolerance.
TEST_F(ModelTest, ConcurrentCallsOnSeparateCachesMatchSequentialOnes) {
  Model* m = model_;
  constexpr int kThreads = 8;
  std::vector<std::vector<float>> alone(kThreads), together(kThreads);
  auto run = [&](int i, std::vector<float>& out) {
    const std::vector<int32_t> t = Tokens(40 + 7 * i, i + 1);
    auto pre = m->Prefill(t);
    ASSERT_TRUE(pre.ok()) << pre.status();
    auto next = m->Extend(*pre->cache, {5}, {static_cast<int32_t>(t.size())});
    ASSERT_TRUE(next.ok()) << next.status();
    out = pre->last_logits;
    out.insert(out.end(), next->begin(), next->end());
  };
  for (int i = 0; i < kThreads; ++i) run(i, alone[i]);
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) threads.emplace_back([&, i] { run(i, together[i]); });
    for (auto& t : threads) t.join();
    for (int i = 0; i < kThreads; ++i) {
      ASSERT_EQ(together[i].size(), alone[i].size());
      EXPECT_LT(MaxDiff(alone[i], together[i].data(), alone[i].size()), 1e-5) << "thread " << i;
    }
  }
}

TEST_F(ModelTest, KeepMaskThatDropsNothingEqualsNoMask) {
  const auto tokens = Tokens(25);
  PrefillOptions o;
  o.keep_mask.assign(25, 1);
  auto a = model_->Prefill(tokens, o), b = model_->Prefill(tokens);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->last_logits, b->last_logits);
  EXPECT_EQ(a->cache->size(), 25);
}

TEST_F(ModelTest, DroppedTokensAreInvisibleWhileTheCacheIsBuilt) {
  auto tokens = Tokens(30);
  PrefillOptions o;
  o.keep_mask.assign(30, 1);
  for (int i : {3, 4, 10, 17, 22}) o.keep_mask[i] = 0;
  auto a = model_->Prefill(tokens, o);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->cache->size(), 25);
  EXPECT_EQ(a->cache->positions()[3], 5);  // kept slots keep their original positions
  EXPECT_EQ(a->cache->next_position(), 30);
  // Changing what sits at the dropped positions changes nothing the kept tokens see.
  for (int i : {3, 4, 10, 17, 22}) tokens[i] = (tokens[i] + 50) % 96;
  auto b = model_->Prefill(tokens, o);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->last_logits, b->last_logits);
  auto la = model_->Extend(*a->cache, {7}, {30}), lb = model_->Extend(*b->cache, {7}, {30});
  EXPECT_EQ(*la, *lb);
  // ... while without the mask the change is visible.
  auto c = model_->Prefill(tokens);
  EXPECT_GT(MaxDiff(c->last_logits, a->last_logits.data(), V), 1e-3);
}

TEST_F(ModelTest, CompactingToEverySlotEqualsTheFullCache) {
  const auto tokens = Tokens(20);
  auto a = model_->Prefill(absl::MakeSpan(tokens).subspan(0, 19));
  auto b = model_->Prefill(absl::MakeSpan(tokens).subspan(0, 19));
  std::vector<int32_t> all(19);
  std::iota(all.begin(), all.end(), 0);
  ASSERT_TRUE(b->cache->Compact(all).ok());
  auto la = model_->Extend(*a->cache, {tokens[19]}, {19});
  auto lb = model_->Extend(*b->cache, {tokens[19]}, {19});
  EXPECT_EQ(*la, *lb);
}

TEST_F(ModelTest, EvictedCacheDecodesAtOriginalPositionsAndRebuildsExactly) {
  const auto tokens = Tokens(40);
  auto pre = model_->Prefill(absl::MakeSpan(tokens).subspan(0, 39));
  ASSERT_TRUE(pre.ok());
  std::vector<int32_t> kept;
  for (int i = 0; i < 39; i += 2) kept.push_back(i);
  ASSERT_TRUE(pre->cache->Compact(kept).ok());
  EXPECT_EQ(pre->cache->positions(), kept);
  EXPECT_EQ(pre->cache->next_position(), 39);

  // Export every layer, rebuild a fresh cache from the floats (as the cloud does), and
  // decode: float32 export/import is exact.
  const auto& c = model_->config();
  const int n = static_cast<int>(kept.size());
  auto rebuilt = model_->NewCache(kept, 39);
  std::vector<float> k(c.num_kv_heads * n * c.head_dim), v(k.size());
  for (int l = 0; l < c.num_layers; ++l) {
    ASSERT_TRUE(pre->cache->ExportLayer(l, 0, n, k.data(), v.data()).ok());
    ASSERT_TRUE(rebuilt->WriteLayer(l, 0, n, k.data(), v.data()).ok());
  }
  auto la = model_->Extend(*pre->cache, {tokens[39]}, {39});
  auto lb = model_->Extend(*rebuilt, {tokens[39]}, {39});
  ASSERT_TRUE(la.ok() && lb.ok());
  EXPECT_EQ(*la, *lb);
  // Dropping half the context changes the answer distribution (the test would catch a
  // cache that silently ignored the compaction).
  auto full = model_->FullLogits(tokens);
  EXPECT_GT(MaxDiff(*la, full->data() + 39 * V, V), 1e-3);
}

TEST_F(ModelTest, ClearErrorsForBadInput) {
  auto r = model_->Prefill(std::vector<int32_t>{1, 2, 97});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("token 2 is id 97, expected 0..96"), std::string::npos)
      << r.status();
  EXPECT_EQ(model_->Prefill(std::vector<int32_t>{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto pre = model_->Prefill(Tokens(5));
  auto e = model_->Extend(*pre->cache, {1}, {4});
  EXPECT_NE(e.status().message().find("must exceed 4"), std::string::npos) << e.status();
  e = model_->Extend(*pre->cache, {1}, {512});
  EXPECT_NE(e.status().message().find("beyond the model's maximum of 512"), std::string::npos);
  PrefillOptions o;
  o.keep_mask = {1, 1};
  EXPECT_NE(model_->Prefill(Tokens(5), o).status().message().find("keep mask has 2 entries for 5"),
            std::string::npos);
  std::vector<float> buf(1000);
  EXPECT_EQ(pre->cache->ExportLayer(2, 0, 5, buf.data(), buf.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pre->cache->Compact({3, 1}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelLoadTest, FingerprintTracksWeightsAndErrorsNameTheTensor) {
  const auto c = TinyConfig();
  const std::string a = WriteTinyModel("fp_a", c, 1), b = WriteTinyModel("fp_b", c, 2);
  auto ma = Model::Load(a), ma2 = Model::Load(a), mb = Model::Load(b);
  ASSERT_TRUE(ma.ok() && ma2.ok() && mb.ok());
  EXPECT_EQ((*ma)->fingerprint(), (*ma2)->fingerprint());
  EXPECT_NE((*ma)->fingerprint(), (*mb)->fingerprint());
  EXPECT_EQ((*ma)->fingerprint().rfind("qwen2-", 0), 0u) << (*ma)->fingerprint();

  // A config that disagrees with the weights names the tensor and both shapes.
  auto bad = c;
  bad.intermediate_size = 65;
  std::ofstream(a + "/config.json") << bad.ToJson();
  auto r = Model::Load(a);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(
                "model.layers.0.mlp.gate_proj.weight has shape [64, 32], config needs [65, 32]"),
            std::string::npos)
      << r.status();
  EXPECT_EQ(Model::Load(a, {"cpu", "f16"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Model::Load(::testing::TempDir() + "/nonexistent").status().code(),
            absl::StatusCode::kNotFound);
}

// The intra-op thread count is the process's, set once at start-up: loading a model
// leaves it as it was.
TEST(ModelLoadTest, LoadingLeavesTheProcessThreadCountAlone) {
  const int before = ComputeThreads();
  EXPECT_EQ(SetComputeThreads(1), 1);
  auto m = Model::Load(WriteTinyModel("threads", TinyConfig(), 3));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(ComputeThreads(), 1);
  EXPECT_GE(SetComputeThreads(0), 1);  // 0: every core
  SetComputeThreads(before);
}

TEST(ModelLoadTest, Bf16RuntimeTracksFloat32) {
  const std::string dir = WriteTinyModel("bf16", TinyConfig(), 3);
  auto f = Model::Load(dir), h = Model::Load(dir, {"cpu", "bf16"});
  ASSERT_TRUE(f.ok() && h.ok());
  EXPECT_TRUE((*h)->is_bf16());
  const auto tokens = Tokens(20);
  auto a = (*f)->Prefill(tokens), b = (*h)->Prefill(tokens);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  EXPECT_TRUE(b->cache->is_bf16());
  // Same argmax on a model this small; logits agree to bf16 precision.
  const auto am =
      std::max_element(a->last_logits.begin(), a->last_logits.end()) - a->last_logits.begin();
  const auto bm =
      std::max_element(b->last_logits.begin(), b->last_logits.end()) - b->last_logits.begin();
  EXPECT_EQ(am, bm);
  EXPECT_LT(MaxDiff(a->last_logits, b->last_logits.data(), 97), 0.1);
}

}  // namespace
}  // namespace kvstream::model

namespace kvstream::model {
namespace {

// `kvstream make-model`'s output loads as a model and runs: a Qwen2.5-0.5B preset cut to
// a small shape, sharded, in bf16 weights computed in f32 and in bf16.
TEST(RandomModelLoadTest, ARandomModelLoadsAndPrefills) {
  ModelPreset p = *FindModelPreset("qwen2.5-0.5b");
  p.config.vocab_size = 512;
  p.config.hidden_size = 128;
  p.config.intermediate_size = 256;
  p.config.num_layers = 2;
  const std::string dir = ::testing::TempDir() + "/random_model_load";
  ASSERT_TRUE(WriteRandomModel(p, {StDType::kBF16, 2, 3}, dir).ok());
  std::filesystem::remove(dir + "/tokenizer.json");
  for (const char* dtype : {"f32", "bf16"}) {
    auto m = Model::Load(dir, {"cpu", dtype});
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->config().num_kv_heads, 2);
    EXPECT_EQ((*m)->config().head_dim, 64);
    auto pre = (*m)->Prefill(Tokens(40));
    ASSERT_TRUE(pre.ok()) << pre.status();
    EXPECT_EQ(pre->cache->size(), 40u);
    for (float v : pre->last_logits) ASSERT_TRUE(std::isfinite(v));
  }
}

}  // namespace
}  // namespace kvstream::model
