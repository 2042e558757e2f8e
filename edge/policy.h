// How the edge serves one request: the request's Policy over the daemon's defaults,
// parsed and checked. This is the seam for the bandwidth-adaptive controller: a request
// whose mode resolves to MODE_ADAPTIVE is handed to a PolicyChooser, which returns a
// fixed policy for it.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/codec/spec.h"
#include "common/select/select.h"
#include "kvstream/v1/service.pb.h"

namespace kvstream::edge {

struct ResolvedPolicy {
  kvstream::v1::Mode mode = kvstream::v1::MODE_KV;  // KV, SCOUT or TEXT
  select::Policy selector = select::Policy::kFull;
  double retention = 1.0;
  std::string spec = "raw";  // kv: the plan string as given
  codec::Plan plan;          // kv: parsed `spec`
  uint32_t max_tokens = 32;
  double temperature = 0;
  double top_p = 1;
  uint64_t seed = 0;
  std::string cloud_model;  // scout / text: the cloud model that answers
  double ttft_target_seconds = 0;
};

// Request fields that are set win over `defaults` (zero / empty means unset). Errors are
// INVALID_ARGUMENT naming the field, what was expected and what was found; mode
// ADAPTIVE is returned as is (the caller asks its chooser).
absl::StatusOr<ResolvedPolicy> ResolvePolicy(const kvstream::v1::Policy& request,
                                             const kvstream::v1::Policy& defaults, int num_layers);

// Picks a fixed policy for an adaptive request (the controller plugs in here).
class PolicyChooser {
 public:
  virtual ~PolicyChooser() = default;
  // `context_tokens`: the prompt length; `policy`: the resolved request (mode ADAPTIVE).
  virtual absl::StatusOr<ResolvedPolicy> Choose(const ResolvedPolicy& policy, int context_tokens) = 0;
};

// Parses "kv", "scout", "text" or "adaptive" (flag values).
absl::StatusOr<kvstream::v1::Mode> ParseMode(absl::string_view name);
const char* ModeName(kvstream::v1::Mode mode);

}  // namespace kvstream::edge
