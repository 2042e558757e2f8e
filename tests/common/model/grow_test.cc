// The trainer's initialisations: growing a model (twice as wide, deeper) preserves its
// function (the `large` tiny model starts from the trained `scout` this way), planted
// offset heads attend a fixed distance back from the first step, and a planted recall
// circuit attends from a recap's question to the value of the name asked for; and the
// training forward takes RoPE positions with gaps.
#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "common/model/training.h"
#include "common/model/transformer.h"
#include "tests/common/model/tiny_model.h"

namespace kvstream::model {
namespace {

ModelConfig Doubled(const ModelConfig& s, int layers) {
  ModelConfig b = s;
  b.hidden_size = 2 * s.hidden_size;
  b.num_heads = 2 * s.num_heads;
  b.num_kv_heads = 2 * s.num_kv_heads;
  b.intermediate_size = 2 * s.intermediate_size;
  b.num_layers = layers;
  return b;
}

torch::Tensor Ids() {
  return torch::tensor(std::vector<int64_t>{3, 17, 42, 5, 88, 17, 42, 60, 1, 9, 17, 42})
      .view({1, 12});
}

class GrowTest : public ::testing::TestWithParam<bool> {};

TEST_P(GrowTest, GrownModelComputesTheSameLogits) {
  ModelConfig s = testing::TinyConfig();
  s.tie_word_embeddings = GetParam();
  const Weights w =
      InitWeights(s, 3, 0.3);  // large init: sharp attention, so a wrong head mapping shows
  const ModelConfig b = Doubled(s, s.num_layers + 2);
  auto g = GrowWeights(s, w, b, 0.0, 1);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->layers.size(), 4u);
  EXPECT_EQ(g->embed.size(1), 64);
  const torch::Tensor small = ForwardFull(s, w, Ids());
  const torch::Tensor big = ForwardFull(b, *g, Ids());
  ASSERT_EQ(big.sizes(), small.sizes());
  EXPECT_LT((big - small).abs().max().item<float>(), 1e-4f);
  // Noise lets the copies differ, and moves the logits only a little (std 1e-3 against
  // weights of std 0.3: a few percent of the logits' range).
  auto noisy = GrowWeights(s, w, b, 1e-3, 1);
  ASSERT_TRUE(noisy.ok());
  const float moved = (ForwardFull(b, *noisy, Ids()) - small).abs().max().item<float>();
  const float range = small.abs().max().item<float>();
  EXPECT_GT(moved, 0.0f);
  EXPECT_LT(moved, 0.05f * range) << "logits up to " << range;
}

INSTANTIATE_TEST_SUITE_P(TiedAndUntied, GrowTest, ::testing::Bool());

// Two gaps inside [1, gap_end), strictly increasing positions, the last within the span,
// the distances on either side of a gap kept; nothing when the span does not exceed n.
TEST(GappedPositionsTest, TwoGapsBeforeTheEndWithinTheSpan) {
  std::mt19937_64 rng(5);
  int spread = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const std::vector<int64_t> p = GappedPositions(100, 2100, 60, rng);
    ASSERT_EQ(p.size(), 100u);
    EXPECT_EQ(p[0], 0);
    EXPECT_LE(p.back(), 2099);
    int gaps = 0;
    for (size_t j = 1; j < p.size(); ++j) {
      ASSERT_GT(p[j], p[j - 1]);
      if (p[j] - p[j - 1] > 1) {
        ++gaps;
        EXPECT_LT(j, 60u) << "a gap after the context";
      }
    }
    EXPECT_LE(gaps, 2);
    spread += p.back() > 1000;
  }
  EXPECT_GT(spread, 50) << "gaps should often span long distances";
  EXPECT_TRUE(GappedPositions(100, 100, 60, rng).empty());
  EXPECT_TRUE(GappedPositions(100, 2100, 1, rng).empty());
}

// --position_gaps trains on RoPE positions with gaps. RoPE sees only distances, so
// positions shifted by a constant give the same hidden states; a gap changes only the
// rows after it, and the same gap in a batch row of its own gives that row's result.
TEST(PositionsTest, ForwardSeesDistancesNotOffsets) {
  const ModelConfig c = testing::TinyConfig();
  const Weights w = InitWeights(c, 3, 0.3);
  const torch::Tensor plain = ForwardHidden(c, w, Ids());
  const torch::Tensor shifted = torch::arange(12, torch::kInt64).view({1, 12}) + 1000;
  EXPECT_LT((ForwardHidden(c, w, Ids(), nullptr, &shifted) - plain).abs().max().item<float>(),
            1e-3f);
  torch::Tensor gapped = torch::arange(12, torch::kInt64).view({1, 12});
  gapped.narrow(1, 6, 6).add_(500);
  const torch::Tensor g = ForwardHidden(c, w, Ids(), nullptr, &gapped);
  EXPECT_LT((g.narrow(1, 0, 6) - plain.narrow(1, 0, 6)).abs().max().item<float>(), 1e-5f);
  EXPECT_GT((g.narrow(1, 6, 6) - plain.narrow(1, 6, 6)).abs().max().item<float>(), 1e-2f);
  // Two rows, one contiguous and one gapped, each as computed alone.
  const torch::Tensor both_pos =
      torch::cat({torch::arange(12, torch::kInt64).view({1, 12}), gapped});
  const torch::Tensor both = ForwardHidden(c, w, torch::cat({Ids(), Ids()}), nullptr, &both_pos);
  EXPECT_LT((both[0] - plain[0]).abs().max().item<float>(), 1e-5f);
  EXPECT_LT((both[1] - g[0]).abs().max().item<float>(), 1e-5f);
}

TEST(GrowErrorsTest, NamesTheDimensionThatDoesNotDouble) {
  const ModelConfig s = testing::TinyConfig();
  const Weights w = InitWeights(s, 3);
  ModelConfig b = Doubled(s, s.num_layers);
  b.num_kv_heads = s.num_kv_heads;
  auto g = GrowWeights(s, w, b, 0.0, 1);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("num_key_value_heads must be 4, found 2"), std::string::npos)
      << g.status();
  b = Doubled(s, s.num_layers - 1);
  g = GrowWeights(s, w, b, 0.0, 1);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("num_hidden_layers"), std::string::npos) << g.status();
  b = Doubled(s, s.num_layers);
  b.rope_theta = 2 * s.rope_theta;
  g = GrowWeights(s, w, b, 0.0, 1);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("rope_theta must be"), std::string::npos) << g.status();
}

// Layer `layer`'s attention probabilities [heads, T, T].
torch::Tensor AttentionAt(const ModelConfig& c, const Weights& w, const torch::Tensor& ids,
                          int layer) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> attention;
  ForwardHidden(c, w, ids.unsqueeze(0), &attention);
  return attention[static_cast<size_t>(layer)][0];
}

// Growing does not carry Qwen3's q/k norms, so it refuses such models instead of
// writing one without them.
TEST(GrowErrorsTest, RefusesPerHeadQkNorms) {
  ModelConfig s = testing::TinyConfig();
  s.qk_norm = true;
  const Weights w = InitWeights(s, 3);
  const auto g = GrowWeights(s, w, Doubled(s, s.num_layers), 0.0, 1);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("q/k norms"), std::string::npos) << g.status();
}

TEST(OffsetHeadsTest, PlantedHeadsAttendTheirOffsetBackWhateverTheTokens) {
  const ModelConfig c = testing::TinyConfig();
  Weights w = InitWeights(c, 4);  // HF init: content parts of the scores near zero
  const std::vector<int> offsets = {2, 6, 1};
  ASSERT_TRUE(PlantOffsetHeads(c, w, offsets).ok());
  // Layer 0's attention as the forward computes it, on random tokens.
  torch::manual_seed(8);
  const int64_t T = 48;
  const torch::Tensor attention =
      AttentionAt(c, w, torch::randint(c.vocab_size, {T}, torch::kInt64), 0);
  for (size_t i = 0; i < offsets.size(); ++i) {
    const torch::Tensor probs = attention[static_cast<int64_t>(i)];
    for (int64_t m = offsets[i]; m < T; ++m) {
      EXPECT_EQ(probs[m].argmax().item<int64_t>(), m - offsets[i]) << "head " << i << " at " << m;
      EXPECT_GT(probs[m][m - offsets[i]].item<float>(), 0.9f) << "head " << i << " at " << m;
    }
  }
}

TEST(OffsetHeadsTest, HeadsOfAnotherKvHeadAreLeftAlone) {
  const ModelConfig c = testing::TinyConfig();  // 4 query heads on 2 kv heads
  Weights w = InitWeights(c, 4);
  const torch::Tensor q_before = w.layers[0].q_b.clone(), k_before = w.layers[0].k_b.clone();
  ASSERT_TRUE(PlantOffsetHeads(c, w, {2, 6}).ok());  // query heads 0 and 1: kv head 0
  const int64_t hd = c.head_dim;
  EXPECT_TRUE(torch::equal(w.layers[0].q_b.slice(0, 2 * hd), q_before.slice(0, 2 * hd)));
  EXPECT_TRUE(torch::equal(w.layers[0].k_b.slice(0, hd), k_before.slice(0, hd)));
  EXPECT_FALSE(torch::equal(w.layers[0].k_b.slice(0, 0, hd), k_before.slice(0, 0, hd)));
}

TEST(OffsetHeadsTest, RejectsWhatItCannotPlant) {
  const ModelConfig c = testing::TinyConfig();
  Weights w = InitWeights(c, 4);
  absl::Status st =
      PlantOffsetHeads(c, w, std::vector<int>(static_cast<size_t>(c.num_heads) + 1, 1));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("expected at most 4 offsets"), std::string::npos) << st;
  st = PlantOffsetHeads(c, w, {0});
  EXPECT_NE(st.message().find("offsets of at least 1, found 0"), std::string::npos) << st;
  Weights nobias = InitWeights(c, 4, 0.02, /*attention_bias=*/false);
  st = PlantOffsetHeads(c, nobias, {1});
  EXPECT_NE(st.message().find("q/k biases"), std::string::npos) << st;
}

// Scout-shaped (hidden 96, head_dim 24, GQA 2:1), two layers, rope_theta as Qwen2.5's.
ModelConfig RecallConfig() {
  ModelConfig c = testing::TinyConfig();
  c.vocab_size = 300;
  c.hidden_size = 96;
  c.intermediate_size = 128;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 24;
  c.rope_theta = 1e6;
  return c;
}

// Records "T C O name IS value ." over random names and values, then a recap
// "T C O name IS" for each: layer 1's head 0, asked at each recap IS, against the
// attention it gives the value of that name.
double RecallAttention(const ModelConfig& c, const Weights& w, int records) {
  std::mt19937 rng(11);
  std::vector<int64_t> names(100), ids, value_at(static_cast<size_t>(records));
  std::iota(names.begin(), names.end(), 100);
  std::shuffle(names.begin(), names.end(), rng);
  const int64_t T_ = 1, C = 2, O = 3, IS = 4, DOT = 5;
  for (int r = 0; r < records; ++r) {
    ids.insert(ids.end(), {T_, C, O, names[static_cast<size_t>(r)], IS});
    value_at[static_cast<size_t>(r)] = static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), {200 + static_cast<int64_t>(rng() % 100), DOT});
  }
  std::vector<std::pair<int64_t, int>> asks;
  for (int r = records - 1; r >= 0; --r) {
    ids.insert(ids.end(), {T_, C, O, names[static_cast<size_t>(r)], IS});
    asks.emplace_back(static_cast<int64_t>(ids.size()) - 1, r);
  }
  const torch::Tensor p = AttentionAt(c, w, torch::tensor(ids), 1)[0];
  double sum = 0;
  for (auto [at, r] : asks) sum += p[at][value_at[static_cast<size_t>(r)]].item<double>();
  return sum / records;
}

TEST(RecallCircuitTest, LayerOneAttendsToTheValueOfTheNameAskedFor) {
  const ModelConfig c = RecallConfig();
  Weights w = InitWeights(c, 4);
  EXPECT_LT(RecallAttention(c, w, 16), 0.05);  // unplanted: about the uniform share
  ASSERT_TRUE(PlantRecallCircuit(c, w, 2, {1}, 5).ok());
  EXPECT_GT(RecallAttention(c, w, 16), 0.5);
  // Keys planted one token off (3 back: "O", not the name) match nothing.
  Weights off = InitWeights(c, 4);
  ASSERT_TRUE(PlantRecallCircuit(c, off, 3, {1}, 5).ok());
  EXPECT_LT(RecallAttention(c, off, 16), 0.1);
}

TEST(RecallCircuitTest, RejectsShapesItCannotPlantInto) {
  ModelConfig c = RecallConfig();
  Weights w = InitWeights(c, 4);
  absl::Status st = PlantRecallCircuit(c, w, 2, {1, 8, 3}, 5);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("expected 1 to 2 query offsets"), std::string::npos) << st;
  st = PlantRecallCircuit(c, w, 0, {1}, 5);
  EXPECT_NE(st.message().find("offsets of at least 1, found 0"), std::string::npos) << st;
  const ModelConfig narrow = testing::TinyConfig();  // head_dim 8
  Weights nw = InitWeights(narrow, 4);
  st = PlantRecallCircuit(narrow, nw, 2, {1}, 5);
  EXPECT_NE(st.message().find("head_dim of at least 20, found 8"), std::string::npos) << st;
  c.hidden_size = 48;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  Weights small = InitWeights(c, 4);
  st = PlantRecallCircuit(c, small, 2, {1, 8}, 5);
  EXPECT_NE(st.message().find("hidden_size of at least 72, found 48"), std::string::npos) << st;
}

}  // namespace
}  // namespace kvstream::model
