// How the edge serves one request: the request's Policy over the daemon's defaults,
// parsed and checked. A request whose mode resolves to MODE_ADAPTIVE is then given a
// fixed mode, selector and spec by the controller (EdgeService, common/control/).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/codec/spec.h"
#include "common/pipeline/mode.h"
#include "common/pipeline/request.h"
#include "common/select/select.h"
#include "kvstream/v1/service.pb.h"

namespace kvstream::edge {

struct ResolvedPolicy {
  kvstream::v1::Mode mode = kvstream::v1::MODE_KV;  // KV, PROJECTED, SCOUT or TEXT
  select::Policy selector = select::Policy::kFull;
  double retention = 1.0;
  std::string spec = "raw";  // kv: the plan string as given
  codec::Plan plan;          // kv: parsed `spec`
  uint32_t max_tokens = 32;
  double temperature = 0;
  double top_p = 1;
  uint64_t seed = 0;
  std::string cloud_model;  // projected / scout / text: the cloud model that answers
  double ttft_target_seconds = 0;
  // Set by the adaptive controller: re-plan the remaining layers mid-stream against the
  // target, from the cloud time and the bandwidth the choice assumed.
  bool replan = false;
  double predicted_cloud_seconds = 0;
  double planned_bandwidth_bps = 0;
};

// Request fields that are set win over `defaults` (zero / empty means unset). Errors are
// INVALID_ARGUMENT naming the field, what was expected and what was found; mode
// ADAPTIVE is returned as is.
absl::StatusOr<ResolvedPolicy> ResolvePolicy(const kvstream::v1::Policy& request,
                                             const kvstream::v1::Policy& defaults, int num_layers);

// The request the pipeline runs for `policy` (a mode that answers, not ADAPTIVE), with
// chunks of at most `chunk_bytes` and SnapKV's window of `snapkv_window` rows; with
// `layerwise`, a request that can stream its layers during the prefill (kv / projected
// without a selector) sends one layer per chunk.
pipeline::Request ToPipelineRequest(const ResolvedPolicy& policy, uint64_t chunk_bytes,
                                    int snapkv_window, bool layerwise = false);

// The quality estimate's steps for a plan: `steps` (--estimate_steps) for the whole cache,
// at least `selection_steps` (--estimate_selection_steps) for one that keeps a selection.
int EstimateStepsFor(bool selects, int steps, int selection_steps);

}  // namespace kvstream::edge
