// The header of a projection file (projection.h), torch-free: what the maps were fitted
// for and how, parsed and checked against the file's tensors before any weight is read.
//
// File: safetensors (F32) with "layers.{t}.k" and "layers.{t}.v" [d_in + 1, d_out] (the
// last row is the bias), and __metadata__["kvstream_projection"] holding the JSON header:
//   {"format": 1, "source": MODEL, "target": MODEL, "layer_map": [[l, ...], ...],
//    "joint_inputs": false, "layers": [{"ridge_k", "ridge_v", "r2_k", "r2_v", "cka_k", "cka_v"},
//    ...], "calibration": {"prompts", "held_out", "positions", "description"}}
//   MODEL = {"fingerprint", "num_layers", "num_kv_heads", "head_dim", "rope_theta"}
// d_in = (joint_inputs ? 2 : 1) * |layer_map[t]| * source.num_kv_heads * source.head_dim,
// d_out = target.num_kv_heads * target.head_dim.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model/safetensors.h"

namespace kvstream::model {

inline constexpr char kProjectionMetadataKey[] = "kvstream_projection";

struct ProjectionModel {
  std::string fingerprint;
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  double rope_theta = 0;
};

struct ProjectionLayer {
  std::vector<int> source_layers;
  double ridge_k = 0, ridge_v = 0;  // absolute strengths used
  double r2_k = 0, r2_v = 0;        // held-out R^2 of the fitted map
  double cka_k = 0, cka_v = 0;      // held-out linear CKA between inputs and targets
};

struct ProjectionHeader {
  ProjectionModel source, target;
  std::vector<ProjectionLayer> layers;  // one per target layer
  bool joint_inputs = false;            // both maps read the source's K and V
  int calibration_prompts = 0;
  int held_out_prompts = 0;
  int64_t calibration_positions = 0;
  std::string calibration;  // what the prompts were
};

// Parses the JSON header: field types, dims in 1..2^20 (head dims even), one layer_map
// entry of distinct source layers and one layers entry per target layer.
absl::StatusOr<ProjectionHeader> ParseProjectionHeader(absl::string_view json);
// The JSON header of `h`; ParseProjectionHeader gives back an equal header.
std::string ProjectionHeaderJson(const ProjectionHeader& h);
// d_in of target layer `t`'s maps (see the file comment).
int64_t ProjectionInputDim(const ProjectionHeader& h, int t);
// The header of a projection file from its safetensors header text and tensors, with
// every map checked present as F32 [d_in + 1, d_out]. INVALID_ARGUMENT naming what is
// wrong (but not the file).
absl::StatusOr<ProjectionHeader> ReadProjectionHeader(
    absl::string_view safetensors_header, const std::map<std::string, TensorView>& tensors);

}  // namespace kvstream::model
