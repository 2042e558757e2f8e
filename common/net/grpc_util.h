// gRPC plumbing shared by the daemons and the CLI: message-size limits set the same on
// both sides, channel and server builders, absl::Status -> grpc::Status at a service
// boundary, and the daemon life cycle (port file, waiting for SIGTERM/SIGINT).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvstream::net {

// Largest gRPC message either side accepts. Chunks are cut far below it (1 MiB by
// default); the limit is explicit on channel and server so neither falls back to
// gRPC's 4 MiB receive default.
inline constexpr int kMaxMessageBytes = 16 << 20;

// Longest wait between reconnect attempts of a channel to a daemon: a peer that comes
// back is used within about this long.
inline constexpr int kMaxReconnectBackoffMs = 1000;

// Channels ping a connection quiet this long and drop it when the ping goes unanswered
// as long again (a peer that hangs or vanishes fails the calls on it instead of
// hanging them); servers accept pings down to kMinClientPingSeconds apart.
inline constexpr double kDefaultKeepaliveSeconds = 20;
inline constexpr int kMinClientPingSeconds = 1;

// An insecure channel to `address` with kMaxMessageBytes both ways, the bounded
// reconnect backoff and keepalive pings.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

// TLS material as PEM file paths. Server side: cert + key, and a client CA to require
// client certificates (mutual TLS). Client side: the CA that signed the server's cert,
// and optionally a client cert + key; `server_name` overrides the name checked against
// the server's certificate (e.g. when dialing an IP address). With `reload_seconds` > 0
// the files are read again that often, and every new connection's handshake uses what
// they hold then (a certificate rotated in place is served, or trusted, without a
// restart; connections already open keep theirs); 0 reads them once.
struct TlsFiles {
  std::string ca;
  std::string cert;
  std::string key;
  std::string server_name;
  int reload_seconds = 0;
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};
// Insecure credentials when `tls` is empty; errors name the file that could not be read
// or the combination that is incomplete.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const TlsFiles& tls);
// A channel with kMaxMessageBytes, over TLS when `tls.ca` is set, pinging after
// `keepalive_seconds` of quiet (0: no pings), with `service_config` (JSON; empty: gRPC's
// default, pick_first).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& address, const TlsFiles& tls,
    double keepalive_seconds = kDefaultKeepaliveSeconds, const std::string& service_config = "");

// A service config spreading calls over every address the target resolves to with
// gRPC's `lb_policy` ("round_robin" or "pick_first"), and, when `health_service` is not
// empty, gRPC client-side health checking: an address whose grpc.health.v1 Watch for
// that service is not SERVING (draining, or down) gets no new calls.
// INVALID_ARGUMENT for another policy.
absl::StatusOr<std::string> ReplicaServiceConfig(const std::string& lb_policy,
                                                 const std::string& health_service);

// Applies kMaxMessageBytes to a server under construction, keepalive pings after
// `keepalive_seconds` of quiet (0: none), and accepts client pings kMinClientPingSeconds
// apart.
void ApplyServerLimits(grpc::ServerBuilder& builder,
                       double keepalive_seconds = kDefaultKeepaliveSeconds);

// The same code and message as a grpc::Status.
grpc::Status ToGrpc(const absl::Status& status);
// And back, for errors relayed from a peer; `prefix` names the peer ("cloud: ...").
absl::Status FromGrpc(const grpc::Status& status, const std::string& prefix = "");

// Name of a gRPC status code ("DEADLINE_EXCEEDED"), for logs and metric labels.
const char* CodeName(grpc::StatusCode code);

// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts later;
// call first thing in main, before any thread exists.
void BlockShutdownSignals();
// Waits for SIGTERM, SIGINT or SIGHUP (blocked by BlockShutdownSignals) and returns its
// number.
int WaitForShutdownSignal();

// Writes `port` and a newline to `path` atomically (temp file + rename), so a launcher
// polling for the file never reads a partial number.
absl::Status WritePortFile(const std::string& path, int port);

}  // namespace kvstream::net
