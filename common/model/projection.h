// Cross-model KV projection: maps a source model's cache (the edge's scout) into a
// target model's cache (the cloud's large model), so the target answers from the
// source's prefill without prefilling the prompt itself.
//
// Per target layer t, the inputs are the source layers layer_map[t], every kv head of
// each, concatenated per slot; the output is every kv head of target layer t:
//   x_k [d_in]  = concat_{l in layer_map[t], h} unrope_s(K_s[l][h, slot])   (d_in = |map| * kvh_s *
//   hd_s) K_t[t][:, slot] = rope_t(reshape([x_k, 1] W_k[t]))                      (W_k [d_in + 1,
//   kvh_t * hd_t]) V_t[t][:, slot] = reshape([x_v, 1] W_v[t])                              (no RoPE
//   on values)
// Keys are compared before RoPE: a source key is un-rotated with the source's RoPE at
// the slot's original position, mapped, and rotated with the target's RoPE at the same
// position, so a selected (compacted) cache maps slot by slot. Both models must share a
// tokenizer: a position has to mean the same text on both sides.
//
// Layer map ("bracket", the default): target layer t takes the one or two source layers
// around its relative depth t (Ls - 1) / (Lt - 1), since layers at the same relative
// depth carry the most alike representations; equal depths map layer to layer. "all"
// feeds every source layer to every target layer (larger maps, better fits when the
// depths do not line up).
//
// Fitting is closed-form ridge regression in float64 over calibration prompts, from
// accumulated moments (X^T X, X^T Y, Y^T Y): memory is O(d^2) per layer whatever the
// number of prompts. The ridge strength is chosen per layer and per K / V on held-out
// prompts, from a grid relative to the mean input variance; held-out R^2 and linear CKA
// are reported per layer.
//
// With joint inputs, both maps read the keys and the values of those layers (x = [x_k,
// x_v]). File layout and header: projection_header.h.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/codec/spec.h"
#include "common/model/model.h"
#include "common/model/projection_header.h"

namespace kvstream::model {

class Projection {
 public:
  // Reads and checks a projection file: header fields and types, one map per target
  // layer, every tensor's shape against the header's dims, every entry finite.
  // INVALID_ARGUMENT (or NOT_FOUND for a missing file) naming what is wrong.
  static absl::StatusOr<std::unique_ptr<Projection>> Load(const std::string& path);
  ~Projection();

  const ProjectionHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  // FAILED_PRECONDITION naming the field when `target` is not the model the maps were
  // fitted for (fingerprint, layers, kv heads, head dim, RoPE base).
  absl::Status CheckTarget(const Model& target) const;
  // FAILED_PRECONDITION when a sender's cache is not the source's shape.
  absl::Status CheckSource(const std::string& fingerprint, int num_layers, int kv_heads,
                           int head_dim) const;
  // The target model's cache for the same slots, positions and next position.
  absl::StatusOr<std::unique_ptr<KvCache>> Apply(const KvCache& source, const Model& target) const;
  absl::Status Save(const std::string& path) const;

 private:
  friend class ProjectionFitter;
  struct Maps;
  Projection();
  ProjectionHeader header_;
  std::string path_;
  std::unique_ptr<Maps> maps_;
};

struct FitOptions {
  std::string layer_map = "bracket";  // "bracket" or "all"
  // Both maps read the source layers' keys and values (d_in doubles): the value map can
  // use what the keys carry, and the key map what the values carry.
  bool joint_inputs = false;
  // Ridge strengths tried, times the mean diagonal of the inputs' second moment.
  std::vector<double> ridge_grid = {1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1};
  std::string calibration;  // recorded in the header
  // Plans the source cache goes through (encode and decode, as on the wire) before its
  // moments are taken, one per prompt in turn ("raw": untouched; empty: all raw). Maps
  // fitted on clean caches alone can amplify quantization noise; fitted on what the
  // cloud will receive, the ridge choice weighs that noise too.
  std::vector<std::string> input_specs;
};

// The source layers feeding each target layer under `kind` ("bracket" or "all").
absl::StatusOr<std::vector<std::vector<int>>> ProjectionLayerMap(const std::string& kind,
                                                                 int source_layers,
                                                                 int target_layers);

// INVALID_ARGUMENT unless both model directories hold byte-identical tokenizer.json.
absl::Status CheckSameTokenizer(const std::string& source_dir, const std::string& target_dir);

class ProjectionFitter {
 public:
  static absl::StatusOr<std::unique_ptr<ProjectionFitter>> Create(Model& source, Model& target,
                                                                  const FitOptions& options);
  ~ProjectionFitter();
  // Prefills `tokens` on both models and adds every position to the training moments,
  // or to the held-out ones used to choose the ridge strength and report the fit.
  absl::Status AddPrompt(absl::Span<const int32_t> tokens, bool held_out);
  // Solves every layer's maps; needs at least one training and one held-out prompt.
  absl::StatusOr<std::unique_ptr<Projection>> Fit();

 private:
  struct Moments;
  ProjectionFitter() = default;
  Model* source_ = nullptr;
  Model* target_ = nullptr;
  FitOptions options_;
  std::vector<std::vector<int>> layer_map_;
  std::vector<codec::Plan> input_plans_;
  absl::StatusOr<std::unique_ptr<KvCache>> ThroughCodec(std::unique_ptr<KvCache> cache);
  std::vector<std::unique_ptr<Moments>> train_, held_;  // [target layer]
  int prompts_ = 0, held_prompts_ = 0;
  int64_t positions_ = 0;
};

}  // namespace kvstream::model
