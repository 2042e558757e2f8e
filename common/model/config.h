// A model's hyper-parameters, read from a Hugging Face config.json.
//
// Accepted architectures: Qwen2ForCausalLM, Qwen3ForCausalLM (per-head RMSNorm of q and
// k), LlamaForCausalLM, MistralForCausalLM. Both spellings of renamed fields are
// accepted: `torch_dtype` / `dtype`, `rope_theta` / `rope_parameters.rope_theta`, and
// `rope_scaling` / `rope_parameters` with `rope_type` / `type`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::model {

// RoPE frequency scaling as Hugging Face defines it (modeling_rope_utils): "linear"
// divides every frequency by `factor`; "llama3" divides the low frequencies and blends the
// middle band; "yarn" blends interpolated and original frequencies by wavelength and
// scales cos/sin by an attention factor. Empty type: none.
struct RopeScaling {
  std::string type;  // "", "linear", "llama3" or "yarn"
  double factor = 1;
  double low_freq_factor = 1, high_freq_factor = 4;  // llama3
  int original_max_position_embeddings = 0;          // llama3, yarn (0: the model's)
  double beta_fast = 32, beta_slow = 1;              // yarn
  double attention_factor = 0;                       // yarn (0: 0.1 ln(factor) + 1)
  bool truncate = true;                              // yarn
  bool operator==(const RopeScaling& o) const;
};

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
  RopeScaling rope_scaling;
  bool qk_norm = false;  // Qwen3: RMSNorm over head_dim on every q and k head before RoPE
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
