// RoPE scaling (linear, llama3, yarn) and Qwen3's per-head q/k norms, each checked
// against the published formulas written out here in plain arithmetic.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>

#include "common/model/model.h"
#include "common/model/training.h"
#include "common/model/transformer.h"
#include "tests/common/model/tiny_model.h"

namespace kvstream::model {
namespace {

double Base(const ModelConfig& c, int i) {
  return 1.0 / std::pow(c.rope_theta, 2.0 * i / c.head_dim);
}

void ExpectFrequencies(const ModelConfig& c, const std::vector<double>& want) {
  const auto [inv_freq, attention] = RopeInvFreq(c);
  ASSERT_EQ(inv_freq.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(inv_freq[i].item<float>() / want[i], 1.0, 1e-5) << "frequency " << i;
  }
}

TEST(RopeTest, Llama3KeepsHighFrequenciesDividesLowOnesAndBlendsTheBand) {
  ModelConfig c = testing::TinyConfig();
  c.head_dim = 64;
  c.rope_theta = 500000;
  c.rope_scaling = {"llama3", 32, 1, 4, 8192};
  std::vector<double> want;
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < 32; ++i) {
    const double f = Base(c, i), wavelen = 2 * M_PI / f;
    if (wavelen < 8192 / 4.0) {
      want.push_back(f);
      ++kept;
    } else if (wavelen > 8192 / 1.0) {
      want.push_back(f / 32);
      ++divided;
    } else {
      const double s = (8192 / wavelen - 1) / (4 - 1);
      want.push_back((1 - s) * f / 32 + s * f);
      ++blended;
    }
  }
  ASSERT_GT(kept, 0);
  ASSERT_GT(divided, 0);
  ASSERT_GT(blended, 0);
  ExpectFrequencies(c, want);
  EXPECT_EQ(RopeInvFreq(c).second, 1.0);
}

// Qwen2.5's long-context setting: factor 4 over an original 32,768 positions.
TEST(RopeTest, YarnRampsBetweenInterpolationAndExtrapolationAndScalesCosSin) {
  ModelConfig c = testing::TinyConfig();
  c.head_dim = 128;
  c.rope_theta = 1e6;
  c.max_position_embeddings = 32768;
  c.rope_scaling.type = "yarn";
  c.rope_scaling.factor = 4;
  c.rope_scaling.original_max_position_embeddings = 32768;
  const int dim = 128;
  auto correction = [&](double rotations) {
    return dim * std::log(32768 / (rotations * 2 * M_PI)) / (2 * std::log(1e6));
  };
  const double low = std::max(0.0, std::floor(correction(32)));
  const double high = std::min(dim - 1.0, std::ceil(correction(1)));
  std::vector<double> want;
  for (int i = 0; i < dim / 2; ++i) {
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    want.push_back(Base(c, i) / 4 * ramp + Base(c, i) * (1 - ramp));
  }
  ASSERT_EQ(want.front(), Base(c, 0)) << "the fastest rotations are kept";
  ASSERT_NEAR(want.back() / Base(c, dim / 2 - 1), 0.25, 1e-12) << "the slowest interpolated";
  ExpectFrequencies(c, want);
  const double attention = 0.1 * std::log(4.0) + 1;
  EXPECT_NEAR(RopeInvFreq(c).second, attention, 1e-12);
  const torch::Tensor pos = torch::tensor({0, 1, 1000, 100000}, torch::kInt64);
  const auto [cos, sin] = RopeCosSin(pos, c, torch::kFloat32);
  for (int p = 0; p < 4; ++p) {
    const double x = pos[p].item<int64_t>() * want[5];
    const double tol = 1e-4 + 3e-7 * x;  // float32 phase, as Hugging Face computes it
    EXPECT_NEAR(cos[p][5].item<float>(), std::cos(x) * attention, tol) << "position " << p;
    EXPECT_NEAR(sin[p][5 + dim / 2].item<float>(), std::sin(x) * attention, tol);
  }
}

TEST(RopeTest, LinearDividesEveryFrequency) {
  ModelConfig c = testing::TinyConfig();
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 2.5;
  std::vector<double> want;
  for (int i = 0; i < c.head_dim / 2; ++i) want.push_back(Base(c, i) / 2.5);
  ExpectFrequencies(c, want);
}

TEST(RopeTest, ConfigsWithScalingParseAndUnsupportedTypesNameTheField) {
  const std::string llama =
      R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
          "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
          "rope_theta": 500000.0, "max_position_embeddings": 131072,
          "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"}})";
  auto c = ModelConfig::FromJson(llama, "llama.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  auto back = ModelConfig::FromJson(c->ToJson(), "again");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->rope_scaling == c->rope_scaling);
  std::string dynamic = llama;
  dynamic.replace(dynamic.find("\"llama3\""), 8, "\"dynamic\"");
  const auto refused = ModelConfig::FromJson(dynamic, "dyn.json");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("rope_scaling.rope_type \"dynamic\" is not supported"),
            std::string::npos)
      << refused.status();
}

ModelConfig Qwen3Tiny() {
  ModelConfig c = testing::TinyConfig();
  c.architecture = "Qwen3ForCausalLM";
  c.qk_norm = true;
  c.head_dim = 16;  // heads x head_dim = 64, not hidden_size 32, as Qwen3 allows
  return c;
}

// RMSNorm over each head makes q and k invariant to their projections' scale: the
// logits do not move when q_proj and k_proj are multiplied by 5, and they do when the
// norms' weights change.
TEST(Qwen3Test, PerHeadNormsMakeTheProjectionsScaleIrrelevant) {
  const ModelConfig c = Qwen3Tiny();
  Weights w = InitWeights(c, 4, 0.3, /*attention_bias=*/false);
  const torch::Tensor ids = torch::tensor({{3, 14, 15, 92, 65, 35, 89, 79}}, torch::kInt64);
  torch::NoGradGuard no_grad;
  const torch::Tensor base = ForwardFull(c, w, ids);
  for (LayerWeights& l : w.layers) {
    l.q_w = l.q_w * 5;
    l.k_w = l.k_w * 5;
  }
  EXPECT_LT((ForwardFull(c, w, ids) - base).abs().max().item<float>(), 1e-4);
  for (LayerWeights& l : w.layers) l.k_norm = torch::rand({c.head_dim}) + 0.5;
  EXPECT_GT((ForwardFull(c, w, ids) - base).abs().max().item<float>(), 1e-2);
}

// The runtime (cached prefill and decode) computes what the reference forward does.
TEST(Qwen3Test, LoadedModelMatchesTheReferenceForward) {
  const ModelConfig c = Qwen3Tiny();
  const std::string dir = testing::WriteTinyModel("qwen3_tiny", c, 9);
  auto m = Model::Load(dir, {"cpu", "f32"});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->config().qk_norm);
  const std::vector<int32_t> tokens = {3, 14, 15, 92, 65, 35, 89, 79, 32, 38};
  auto full = (*m)->FullLogits(tokens);
  ASSERT_TRUE(full.ok()) << full.status();
  auto pre = (*m)->Prefill(absl::MakeConstSpan(tokens).subspan(0, 9));
  ASSERT_TRUE(pre.ok());
  auto next = (*m)->Extend(*pre->cache, {tokens[9]}, {9});
  ASSERT_TRUE(next.ok());
  const size_t V = c.vocab_size;
  for (size_t i = 0; i < V; ++i) {
    ASSERT_NEAR((*next)[i], (*full)[9 * V + i], 1e-4) << "vocab " << i;
  }
  auto set = WeightSet::OpenDir(dir);
  ASSERT_TRUE(set.ok());
  const Weights w = LoadWeights(c, **set, torch::TensorOptions().dtype(torch::kFloat32)).value();
  torch::NoGradGuard no_grad;
  const torch::Tensor ids =
      torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end())).unsqueeze(0);
  const torch::Tensor ref = ForwardFull(c, w, ids);
  EXPECT_NEAR(ref[0][9][7].item<float>(), (*full)[9 * V + 7], 1e-4);
}

}  // namespace
}  // namespace kvstream::model
