// The life cycle both daemons share: build a gRPC server (message limits, the standard
// grpc.health.v1 health service, server reflection), listen, write the port file, serve
// until SIGTERM or SIGINT, then drain: health goes NOT_SERVING, `on_drain` runs, in-flight
// calls get `grace_seconds` to finish, the rest are cancelled, and Serve returns OK (exit 0).
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/admission.h"
#include "common/metrics/metrics.h"
#include "common/net/auth.h"
#include "common/net/grpc_util.h"

namespace kvstream::net {

// --help lists only the flags defined in `main_file` (e.g. "edge/main.cc"), under `usage`.
void SetDaemonUsage(const std::string& main_file, const std::string& usage);

// Starts serving `metrics` on `address` and, when `port_file` is set, writes the bound
// port there (as Serve does for the gRPC port).
absl::Status StartMetrics(metrics::MetricsServer& metrics, const std::string& address,
                          const std::string& port_file);

struct ServeOptions {
  std::string component;  // "edge" or "cloud", for logs
  std::string listen;     // "host:port"; port 0 picks a free one
  std::string port_file;  // written with the bound port once serving (empty: none)
  double grace_seconds = 10;
  std::vector<std::string> health_services;  // fully-qualified service names marked SERVING
  std::shared_ptr<grpc::ServerCredentials> credentials;  // null: insecure
  bool reflection = true;                                // gRPC server reflection
  double keepalive_seconds = kDefaultKeepaliveSeconds;   // 0: no server pings
  // Called once the drain begins, before in-flight calls get their grace period: e.g.
  // refuse queued model work with UNAVAILABLE so the grace goes to running requests.
  std::function<void()> on_drain;
  // Called on SIGHUP (e.g. re-read the token file); the daemon keeps serving.
  std::function<void()> on_reload;
};

// Resolves --model_workers and --threads (0: the default split of this machine's cores,
// base::DefaultWorkerSplit) and checks --max_queued; logs the split and warns when
// workers x threads exceeds the cores (each forward pass would then wait on the others).
absl::StatusOr<base::WorkerSplit> SplitCores(const std::string& component, int workers, int threads,
                                             int max_queued);

// Logs a warning when a daemon listens beyond loopback with neither TLS nor tokens.
void WarnIfOpen(const std::string& component, const std::string& listen, bool tls, bool tokens);
// SIGHUP: re-reads the token file (null: nothing to do) and logs the outcome.
void ReloadTokens(const std::string& component, TokenAuthenticator* auth);

// Call BlockShutdownSignals() first thing in main, before any thread starts.
absl::Status Serve(const ServeOptions& options, const std::vector<grpc::Service*>& services);

}  // namespace kvstream::net
