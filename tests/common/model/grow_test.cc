// Growing a model (twice as wide, deeper) preserves its function: the trainer starts the
// `large` tiny model from the trained `scout` this way.
#include <gtest/gtest.h>

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

torch::Tensor Ids() { return torch::tensor(std::vector<int64_t>{3, 17, 42, 5, 88, 17, 42, 60, 1, 9, 17, 42}).view({1, 12}); }

class GrowTest : public ::testing::TestWithParam<bool> {};

TEST_P(GrowTest, GrownModelComputesTheSameLogits) {
  ModelConfig s = testing::TinyConfig();
  s.tie_word_embeddings = GetParam();
  const Weights w = InitWeights(s, 3, 0.3);  // large init: sharp attention, so a wrong head mapping shows
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

TEST(GrowErrorsTest, NamesTheDimensionThatDoesNotDouble) {
  const ModelConfig s = testing::TinyConfig();
  const Weights w = InitWeights(s, 3);
  ModelConfig b = Doubled(s, s.num_layers);
  b.num_kv_heads = s.num_kv_heads;
  auto g = GrowWeights(s, w, b, 0.0, 1);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("num_key_value_heads must be 4, found 2"), std::string::npos) << g.status();
  b = Doubled(s, s.num_layers - 1);
  g = GrowWeights(s, w, b, 0.0, 1);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("num_hidden_layers"), std::string::npos) << g.status();
}

}  // namespace
}  // namespace kvstream::model
