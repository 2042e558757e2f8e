// A model's hyper-parameters, read from a Hugging Face config.json.
//
// Accepted architectures: Qwen2ForCausalLM, LlamaForCausalLM, MistralForCausalLM. Both
// spellings of renamed fields are accepted: `torch_dtype` / `dtype`, and `rope_theta` /
// `rope_parameters.rope_theta`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::model {

struct ModelConfig {
  std::string architecture;  // e.g. "Qwen2ForCausalLM"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // hidden_size / num_heads unless given
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";  // as written in the file
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;

  // Parses config.json text; `source` names the file in error messages.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view text, absl::string_view source);
  static absl::StatusOr<ModelConfig> Load(const std::string& path);
  // HF-style config.json for this config (used when the project writes its tiny models).
  std::string ToJson() const;
};

}  // namespace kvstream::model
