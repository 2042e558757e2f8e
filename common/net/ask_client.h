// Client side of EdgeService.Ask: runs one request, hands each answer token to a
// callback as it arrives, and returns the answer, the edge's stats and the TTFT the
// client itself measured. Used by `kvstream ask`, `kvstream demo`, tests and benches.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "kvstream/v1/service.grpc.pb.h"

namespace kvstream::net {

struct AskResult {
  std::string answer;  // concatenated token bytes
  std::vector<int32_t> token_ids;
  kvstream::v1::RequestStats stats;
  double client_ttft_seconds = 0;   // call start to first token, as this client saw it
  double client_total_seconds = 0;  // call start to the stats event
};

struct AskCall {
  double timeout_seconds = 0;  // gRPC deadline (0: none)
  std::function<void(const kvstream::v1::Token&)> on_token;
  // Optional: the call's context, e.g. to TryCancel from another thread. Set while the
  // call runs.
  std::function<void(grpc::ClientContext*)> on_start;
  std::string bearer_token;  // sent as "authorization: Bearer ..." when set
};

// Errors keep the server's code and message.
absl::StatusOr<AskResult> Ask(kvstream::v1::EdgeService::Stub& stub,
                              const kvstream::v1::AskRequest& request, const AskCall& call = {});

}  // namespace kvstream::net
