// Internal (includes torch): the Qwen2/Llama decoder as functions over a Weights struct.
// Included by model.cc and the tiny-model trainer only; everything else uses model.h.
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

#include <torch/torch.h>

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
                                    std::shared_ptr<const WeightSet> in_place = nullptr);
// HF-style initialisation: N(0, std) matrices and embeddings, zero biases, unit norms.
Weights InitWeights(const ModelConfig& config, uint64_t seed, double std = 0.02,
                    bool attention_bias = true);
// Grows `small` into `big` (Net2Net-style, function-preserving): twice the hidden size,
// heads, kv heads and intermediate size at the same head_dim, every unit duplicated and
// every input halved, and big.num_layers - small.num_layers identity layers appended
// (fresh weights, zero output projections). With noise 0 the grown model computes the
// same logits; noise > 0 adds N(0, noise) to the grown matrices so duplicated units can
// drift apart in training. Other shapes: InvalidArgument saying which dimension differs.
absl::StatusOr<Weights> GrowWeights(const ModelConfig& small, const Weights& w,
                                    const ModelConfig& big, double noise, uint64_t seed);
// Construction-time initialisation of previous-token heads: sets layer 0's q and k
// biases so that query head i attends `offsets[i]` tokens back whatever the tokens are
// (with RoPE a bias pair rotated by offset * theta against the key's peaks at that
// distance; only the 4 highest frequencies carry it, the low ones cannot tell
// neighbouring positions apart). `amplitude` 9 puts the peak about 10 logits above the
// next position. Key matching (recall) is built on such heads, and from the usual
// zero biases they form only after a long plateau. Query heads i / (heads / kv_heads)
// share a kv head; every kv head a planted head uses gets the same key bias.
// InvalidArgument for more offsets than heads, offsets below 1, or no q/k biases.
absl::Status PlantOffsetHeads(const ModelConfig& config, Weights& w,
                              const std::vector<int>& offsets, double amplitude = 9.0);
// Writes float32 model.safetensors with HF names.
// Construction-time recall circuit for records such as "The code of X is V.", asked
// for as "...X is" (answer next) or "...X?" followed by a fixed template:
// - layer 0: query head 0 attends `key_offset` tokens back (from V, to its name X) and
//   head 1 + j attends `query_offsets[j]` back (from where V is predicted, to the X
//   asked for), as PlantOffsetHeads plants them; their kv heads share one orthonormal
//   value map, and each head writes through o_proj into its own orthonormal subspace
//   of the residual, `out_scale` times;
// - layer 1: query head j matches the subspace of query offset j against the key
//   subspace of kv head 0 (`match_scale` times a shared projection), on the 6 most
//   slowly rotating RoPE pairs only, the ones whose products survive the distance
//   between question and record (the larger rope_theta, the more such pairs).
// So from the start, layer 1's heads attend to the value whose name is the one asked
// for; training has to learn to copy it. Measured on the scout shape (hidden 96, head_dim
// 24, rope_theta 1e6), untrained: 0.90 of head 0's attention on the right value among 8
// records, 0.77 among 60 (about 500 tokens); 0.37 among 32 with rope_theta 1e4.
// InvalidArgument for fewer than 2 layers, 0 or more than heads/kv_heads query offsets,
// a head_dim below 20 (4 fast pairs for the offsets and 6 slow ones), a hidden_size
// without room for a head_dim-wide subspace per planted head, or what PlantOffsetHeads
// rejects.
absl::Status PlantRecallCircuit(const ModelConfig& config, Weights& w, int key_offset,
                                const std::vector<int>& query_offsets, uint64_t seed,
                                double out_scale = 1.0, double match_scale = 3.0);

absl::Status SaveWeights(const ModelConfig& config, const Weights& w, const std::string& path);

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
// to it (query heads; for diagnostics).
torch::Tensor ForwardHidden(const ModelConfig& config, const Weights& w, const torch::Tensor& ids,
                            std::vector<torch::Tensor>* attention = nullptr);

}  // namespace kvstream::model
