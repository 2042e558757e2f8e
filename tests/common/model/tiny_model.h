// Writes small random Qwen2-architecture model directories for tests.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include "common/model/config.h"
#include "common/model/training.h"
#include "common/model/transformer.h"

namespace kvstream::model::testing {

inline ModelConfig TinyConfig() {
  ModelConfig c;
  c.architecture = "Qwen2ForCausalLM";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = true;
  c.eos_token_ids = {96};
  return c;
}

// A fresh directory under the test temp dir holding config.json and model.safetensors.
// A larger init std than HF's 0.02 makes attention non-uniform, so bugs show.
inline std::string WriteTinyModel(const std::string& name, const ModelConfig& c, uint64_t seed,
                                  double std = 0.3) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << c.ToJson();
  const Weights w = InitWeights(c, seed, std);
  const absl::Status st = SaveWeights(c, w, (dir / "model.safetensors").string());
  if (!st.ok()) throw std::runtime_error(st.ToString());
  return dir.string();
}

}  // namespace kvstream::model::testing
