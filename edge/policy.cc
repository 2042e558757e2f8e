#include "edge/policy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/base/quote.h"
#include "common/base/status.h"

namespace kvstream::edge {

using kvstream::v1::Mode;

absl::StatusOr<ResolvedPolicy> ResolvePolicy(const kvstream::v1::Policy& req,
                                             const kvstream::v1::Policy& def, int num_layers) {
  ResolvedPolicy p;
  p.mode = req.mode() != kvstream::v1::MODE_UNSPECIFIED ? req.mode() : def.mode();
  if (p.mode == kvstream::v1::MODE_UNSPECIFIED) p.mode = kvstream::v1::MODE_KV;
  if (!kvstream::v1::Mode_IsValid(p.mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.mode: expected a Mode value, found ", static_cast<int>(p.mode)));
  }
  const std::string selector = !req.selector().empty()  ? req.selector()
                               : def.selector().empty() ? "full"
                                                        : def.selector();
  auto sel = select::ParsePolicy(selector);
  if (!sel.ok())
    return absl::InvalidArgumentError(absl::StrCat("policy.selector: ", sel.status().message()));
  p.selector = *sel;
  p.retention = req.retention() != 0   ? req.retention()
                : def.retention() != 0 ? def.retention()
                                       : 1.0;
  if (!(p.retention > 0 && p.retention <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.retention: expected a share in (0, 1], found ", p.retention));
  }
  if (p.selector == select::Policy::kFull) p.retention = 1.0;
  p.spec = !req.spec().empty() ? req.spec() : def.spec().empty() ? "raw" : def.spec();
  auto plan = codec::ParsePlan(p.spec);
  if (!plan.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.spec ", base::Quote(p.spec), ": ", plan.status().message()));
  }
  const absl::Status valid = plan->Validate(num_layers);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.spec ", base::Quote(p.spec), ": ", valid.message()));
  }
  p.plan = *plan;
  p.max_tokens = req.max_tokens() != 0   ? req.max_tokens()
                 : def.max_tokens() != 0 ? def.max_tokens()
                                         : 32;
  p.temperature = req.temperature() != 0 ? req.temperature() : def.temperature();
  p.top_p = req.top_p() != 0 ? req.top_p() : def.top_p() != 0 ? def.top_p() : 1.0;
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature) || !(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy: expected temperature >= 0 and top_p in (0, 1], found ", p.temperature,
                     " and ", p.top_p));
  }
  p.seed = req.seed() != 0 ? req.seed() : def.seed();
  p.cloud_model = !req.cloud_model().empty() ? req.cloud_model() : def.cloud_model();
  p.ttft_target_seconds =
      req.ttft_target_seconds() != 0 ? req.ttft_target_seconds() : def.ttft_target_seconds();
  if (!(p.ttft_target_seconds >= 0) || !std::isfinite(p.ttft_target_seconds)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.ttft_target_seconds: expected >= 0, found ", p.ttft_target_seconds));
  }
  return p;
}

pipeline::Request ToPipelineRequest(const ResolvedPolicy& p, uint64_t chunk_bytes,
                                    int snapkv_window, bool layerwise) {
  pipeline::Request q;
  q.mode = p.mode;
  q.selector = p.selector;
  q.retention = p.retention;
  q.seed = p.seed;
  q.plan = p.plan;
  q.cloud_model = p.cloud_model;
  q.max_tokens = p.max_tokens;
  q.temperature = p.temperature;
  q.top_p = p.top_p;
  q.chunk_bytes = chunk_bytes;
  q.snapkv_window = snapkv_window;
  q.layer_chunks = layerwise && q.CanStreamLayers();
  return q;
}

int EstimateStepsFor(bool selects, int steps, int selection_steps) {
  return selects ? std::max(steps, selection_steps) : steps;
}

}  // namespace kvstream::edge
