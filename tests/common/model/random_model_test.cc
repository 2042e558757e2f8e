#include "common/model/random_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "common/model/config.h"
#include "common/model/safetensors.h"

namespace kvstream::model {
namespace {

uint64_t Params(const ModelPreset& p) {
  uint64_t n = 0;
  for (const auto& [name, shape] : ModelTensors(p)) {
    uint64_t e = 1;
    for (int64_t d : shape) e *= static_cast<uint64_t>(d);
    n += e;
  }
  return n;
}

// The parameter counts Qwen publishes for these models.
TEST(RandomModelTest, PresetsHaveThePublishedParameterCounts) {
  EXPECT_EQ(Params(*FindModelPreset("qwen2.5-0.5b")), 494032768u);
  EXPECT_EQ(Params(*FindModelPreset("qwen2.5-1.5b")), 1543714304u);
  EXPECT_EQ(Params(*FindModelPreset("qwen2.5-3b")), 3085938688u);
  EXPECT_EQ(Params(*FindModelPreset("qwen2.5-7b")), 7615616512u);
  EXPECT_EQ(Params(*FindModelPreset("qwen3-0.6b")), 596049920u);
  EXPECT_EQ(Params(*FindModelPreset("llama-3.2-1b")), 1235814400u);
  const auto missing = FindModelPreset("qwen9");
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_NE(missing.status().message().find("qwen2.5-3b"), std::string::npos);
}

ModelPreset Small() {
  ModelPreset p = *FindModelPreset("qwen2.5-0.5b");
  p.config.vocab_size = 300;
  p.config.hidden_size = 64;
  p.config.intermediate_size = 96;
  p.config.num_layers = 3;
  p.config.num_heads = 4;
  p.config.num_kv_heads = 2;
  p.config.head_dim = 16;
  return p;
}

float Bf16(const uint8_t* p) {
  uint32_t u = static_cast<uint32_t>(p[0] | (p[1] << 8)) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(RandomModelTest, WritesALoadableConfigAndEveryTensorInEveryShardLayout) {
  const ModelPreset p = Small();
  const std::string one = ::testing::TempDir() + "/random_one",
                    three = ::testing::TempDir() + "/random_three";
  ASSERT_TRUE(WriteRandomModel(p, {StDType::kBF16, 1, 5}, one).ok());
  ASSERT_TRUE(WriteRandomModel(p, {StDType::kBF16, 3, 5}, three).ok());
  EXPECT_TRUE(std::filesystem::exists(three + "/model-00003-of-00003.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(three + "/model.safetensors.index.json"));
  auto config = ModelConfig::Load(one + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_layers, 3);
  EXPECT_EQ(config->torch_dtype, "bfloat16");
  auto a = WeightSet::OpenDir(one);
  auto b = WeightSet::OpenDir(three);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  for (const auto& [name, shape] : ModelTensors(p)) {
    auto ta = (*a)->Get(name, shape);
    auto tb = (*b)->Get(name, shape);
    ASSERT_TRUE(ta.ok()) << ta.status();
    ASSERT_TRUE(tb.ok()) << tb.status();
    EXPECT_EQ((*ta)->dtype, StDType::kBF16);
    // A tensor's values depend on the seed and the tensor, not on the shard layout.
    EXPECT_EQ(std::memcmp((*ta)->data, (*tb)->data, (*ta)->nbytes), 0) << name;
  }
  // Norms are 1; matrices have mean ~0 and std ~0.02.
  EXPECT_EQ(Bf16((*(*a)->Get("model.norm.weight"))->data), 1.0f);
  const TensorView* embed = *(*a)->Get("model.embed_tokens.weight");
  double sum = 0, sq = 0;
  const int64_t n = embed->numel();
  for (int64_t i = 0; i < n; ++i) {
    const double v = Bf16(embed->data + 2 * i);
    sum += v;
    sq += v * v;
  }
  EXPECT_NEAR(sum / n, 0, 0.001);
  EXPECT_NEAR(std::sqrt(sq / n), 0.02, 0.001);
}

TEST(RandomModelTest, RefusesShardCountsItCannotFill) {
  const ModelPreset p = Small();
  const auto st = WriteRandomModel(p, {StDType::kF32, 0, 1}, ::testing::TempDir() + "/random_0");
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  const auto many =
      WriteRandomModel(p, {StDType::kF32, 1000, 1}, ::testing::TempDir() + "/random_1000");
  EXPECT_TRUE(absl::IsInvalidArgument(many)) << many;
}

}  // namespace
}  // namespace kvstream::model
