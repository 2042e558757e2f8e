// Random-weight models with real configurations, for size, memory and speed work and for
// tests that need a real model's shapes (cache sizes, compute times). Their answers are
// noise: quality is not what they are for.
//
// Written without libtorch, one tensor at a time, so a 7B-shaped model needs no more
// memory than its largest tensor: matrices and embeddings approximately N(0, 0.02) (a sum
// of four uniforms, scaled), norms 1, attention biases 0 (Qwen2 shapes have them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"

namespace kvstream::model {

struct ModelPreset {
  std::string name;  // e.g. "qwen2.5-0.5b"
  ModelConfig config;
  bool attention_bias = true;
};

// The presets, as published in their config.json files: Qwen2.5 0.5B, 1.5B, 3B and 7B,
// Qwen3 0.6B (per-head q/k norms, head_dim 128) and Llama 3.2 1B (llama3 rope_scaling).
const std::vector<ModelPreset>& ModelPresets();
// NOT_FOUND listing the presets.
absl::StatusOr<ModelPreset> FindModelPreset(const std::string& name);

struct RandomModelOptions {
  StDType dtype = StDType::kBF16;
  int shards = 1;  // > 1: model-0000i-of-0000K.safetensors and an index
  uint64_t seed = 1;
  double std = 0.02;
};

// Every tensor a model of `preset`'s shape has, with its shape (HF names, model order).
std::vector<std::pair<std::string, std::vector<int64_t>>> ModelTensors(const ModelPreset& preset);

// Writes config.json and the weights into `dir` (created if missing). The tokenizer is
// the caller's to add. INVALID_ARGUMENT for shards < 1 or more shards than tensors.
absl::Status WriteRandomModel(const ModelPreset& preset, const RandomModelOptions& options,
                              const std::string& dir);

}  // namespace kvstream::model
