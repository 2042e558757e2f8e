// Training-time code over the decoder's Weights (includes torch): initialisation, the
// Net2Net growth, the planted circuits and saving. Linked by the trainer (`kvstream
// train-tiny`) and tests, not by the daemons: `kvstream_training`.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/config.h"
#include "common/model/transformer.h"

namespace kvstream::model {

// RoPE positions for a training sequence of n tokens spread over up to `span` positions
// (positional skip-wise training): two gaps of random size, together at most span - n,
// at two random token indices in [1, gap_end), so tokens either side of a gap keep their
// distances. Strictly increasing, the last at most span - 1. Empty (positions 0..n-1)
// when span <= n or gap_end < 2.
std::vector<int64_t> GappedPositions(int64_t n, int64_t span, int64_t gap_end,
                                     std::mt19937_64& rng);
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

// Writes float32 model.safetensors with HF names.
absl::Status SaveWeights(const ModelConfig& config, const Weights& w, const std::string& path);

}  // namespace kvstream::model
