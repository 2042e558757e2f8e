// Internal (includes torch's tensor headers, not all of <torch/torch.h>): the Qwen2/Llama decoder
// as functions over a Weights struct. Included by model.cc and the tiny-model trainer only;
// everything else uses model.h.
//
// Shapes, HF naming in brackets:
//   embed   [vocab, hidden]                       (model.embed_tokens.weight)
//   q_w     [heads * head_dim, hidden], q_b [heads * head_dim]   (self_attn.q_proj)
//   k_w/v_w [kv_heads * head_dim, hidden], k_b/v_b                (self_attn.k_proj/v_proj)
//   o_w     [hidden, heads * head_dim]                            (self_attn.o_proj)
//   gate/up [intermediate, hidden], down [hidden, intermediate]   (mlp.*_proj)
//   norms   [hidden]                                              (*_layernorm, model.norm)
//   lm_head [vocab, hidden], the embedding itself when tied       (lm_head.weight)
#pragma once

#include <torch/types.h>
#include <torch/utils.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"

namespace kvstream::model {

// c10::Error stops here: every public entry point of the runtime (model.cc,
// projection.cc) runs its body through Guard, so libtorch exceptions become Status.
template <typename F>
auto Guard(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

struct LayerWeights {
  torch::Tensor input_norm, q_w, q_b, k_w, k_b, v_w, v_b, o_w;  // q_b/k_b/v_b may be undefined
  torch::Tensor post_norm, gate, up, down;
  torch::Tensor q_norm, k_norm;  // [head_dim], Qwen3 only
};

struct Weights {
  torch::Tensor embed;
  std::vector<LayerWeights> layers;
  torch::Tensor norm;
  torch::Tensor lm_head;  // aliases embed when tie_word_embeddings

  // Distinct tensors (a tied head counted once), e.g. for an optimizer.
  std::vector<torch::Tensor> Parameters() const;
};

// Reads and shape-checks every tensor the config implies; converts to `options`. With
// `in_place` (pointing at `set`), tensors already in that dtype on the CPU use the mapped
// files' bytes without a copy (read-only: for inference, not for training) and keep
// the set open.
absl::StatusOr<Weights> LoadWeights(const ModelConfig& config, const WeightSet& set,
                                    const torch::TensorOptions& options,
                                    const std::shared_ptr<const WeightSet>& in_place = nullptr);
// x [..., hidden] -> same shape; statistics in float32.
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
// cos, sin [n, head_dim] for int64 positions [n] (HF rotate-half convention).
std::pair<torch::Tensor, torch::Tensor> RopeCosSin(const torch::Tensor& positions, int head_dim,
                                                   double theta, torch::ScalarType dtype);
// The same for a model's RoPE: its base, and its rope_scaling (linear, llama3, yarn) as
// Hugging Face computes the frequencies; yarn scales cos and sin by its attention factor.
std::pair<torch::Tensor, torch::Tensor> RopeCosSin(const torch::Tensor& positions,
                                                   const ModelConfig& config,
                                                   torch::ScalarType dtype);
// The inverse frequencies [head_dim / 2] (float32) and the cos/sin factor of a config.
std::pair<torch::Tensor, double> RopeInvFreq(const ModelConfig& config);
// x [..., n, head_dim] rotated by cos, sin [n, head_dim].
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
torch::Tensor Mlp(const torch::Tensor& x, const LayerWeights& lw);

// Full causal forward without a cache: ids [batch, n] (int64) -> logits [batch, n, vocab].
// The training path and the reference for the cached paths.
torch::Tensor ForwardFull(const ModelConfig& config, const Weights& w, const torch::Tensor& ids);
// ForwardFull without the lm_head: the final-normed hidden states [batch, n, hidden].
// Training applies the head only where it takes a loss (a few answer tokens per
// sequence), which spares the [batch, n, vocab] logits and their gradient. With
// `attention`, each layer's attention probabilities [batch, heads, n, n] are appended
// to it (query heads; for diagnostics). `positions` [batch, n] (int64, increasing along
// each row) replaces 0..n-1 as the RoPE positions: gaps between them stand for tokens
// not there, so training sees long distances in short sequences (--position_gaps).
torch::Tensor ForwardHidden(const ModelConfig& config, const Weights& w, const torch::Tensor& ids,
                            std::vector<torch::Tensor>* attention = nullptr,
                            const torch::Tensor* positions = nullptr);

}  // namespace kvstream::model
