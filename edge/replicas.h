// The cloud replicas behind the edge's --cloud target. gRPC's round_robin spreads
// Transfer streams over them and its client-side health checking passes over one that is
// down or draining; this adds what gRPC cannot know: that every replica serves the same
// models. At start-up each address the target names is asked for its model card
// (GetInfo.model_card), the card most of them serve is the one expected, and the channel
// health-checks "kvstream.v1.CloudService/CARD", which a replica serving another card does
// not answer SERVING, so it gets no sessions.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/net/grpc_util.h"

namespace kvstream::edge {

// The addresses (host:port) a gRPC target names: an ipv4: / ipv6: list, dns:[//authority]/
// NAME:PORT or NAME:PORT (resolved here with getaddrinfo). Empty for a scheme it cannot
// list (unix:, xds:, ...); INVALID_ARGUMENT for a malformed target, NOT_FOUND for a name
// that does not resolve.
absl::StatusOr<std::vector<std::string>> TargetAddresses(const std::string& target);

struct ReplicaCard {
  std::string address;
  std::string card;   // empty when the replica did not answer
  std::string error;  // why it did not
};

// GetInfo on each address, `timeout_seconds` each, with the edge's TLS settings and
// bearer token.
std::vector<ReplicaCard> ProbeReplicas(const std::vector<std::string>& addresses,
                                       const net::TlsFiles& tls, const std::string& bearer,
                                       double timeout_seconds);

// The card most answering replicas serve (ties: the earliest); empty when none answered.
std::string ExpectedCard(const std::vector<ReplicaCard>& replicas);

// The health service name the edge's channel checks: the card's, or the plain service
// when no card is known.
std::string HealthServiceFor(const std::string& card);

}  // namespace kvstream::edge
