#include "common/net/daemon.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <thread>

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/log.h"
#include "common/net/grpc_util.h"

namespace kvstream::net {

void SetDaemonUsage(const std::string& main_file, const std::string& usage) {
  absl::FlagsUsageConfig config;
  config.contains_helpshort_flags = [main_file](absl::string_view file) {
    return absl::EndsWith(file, main_file);
  };
  config.contains_help_flags = config.contains_helpshort_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
}

absl::Status StartMetrics(metrics::MetricsServer& metrics, const std::string& address,
                          const std::string& port_file) {
  if (absl::Status st = metrics.Start(address); !st.ok()) return st;
  return port_file.empty() ? absl::OkStatus() : WritePortFile(port_file, metrics.port());
}

absl::StatusOr<base::WorkerSplit> SplitCores(const std::string& component, int workers, int threads,
                                             int max_queued) {
  if (workers < 0 || threads < 0 || max_queued < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model_workers, --threads and --max_queued must be >= 0, found ", workers,
                     ", ", threads, " and ", max_queued));
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  base::WorkerSplit split = base::DefaultWorkerSplit(cores);
  if (workers > 0) split.workers = workers;
  split.threads = threads > 0 ? threads : std::max(1, cores / split.workers);
  logging::Logf(logging::Level::kInfo, component,
                "admission: %d model workers x %d torch threads on %d cores, up to %d queued",
                split.workers, split.threads, cores, max_queued);
  if (split.workers * split.threads > cores) {
    logging::Logf(
        logging::Level::kWarning, component,
        "--model_workers x --threads = %d exceeds the %d cores: concurrent forward passes will "
        "contend for them",
        split.workers * split.threads, cores);
  }
  return split;
}

void WarnIfOpen(const std::string& component, const std::string& listen, bool tls, bool tokens) {
  const bool loopback = absl::StartsWith(listen, "127.") ||
                        absl::StartsWith(listen, "localhost:") ||
                        absl::StartsWith(listen, "[::1]:");
  if (!loopback && !tls && !tokens) {
    logging::Logf(
        logging::Level::kWarning, component,
        "listening on %s in plaintext without authentication: any client that reaches it is "
        "served (--tls_cert, --auth_tokens_file)",
        listen);
  }
}

void ReloadTokens(const std::string& component, TokenAuthenticator* auth) {
  if (auth == nullptr) return;
  if (absl::Status st = auth->Reload(); !st.ok()) {
    logging::Logf(logging::Level::kWarning, component,
                  "token reload failed, keeping %zu tokens: %s", auth->size(), st.message());
    return;
  }
  logging::Logf(logging::Level::kInfo, component, "tokens reloaded: %zu from %s", auth->size(),
                auth->path());
}

namespace {
// Linking gRPC's reflection library registers its plugin with every ServerBuilder in the
// process; this option takes it out of one builder again.
class WithoutReflection : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                                    return p->name() == "proto_server_reflection";
                                  }),
                   plugins->end());
  }
};
}  // namespace

absl::Status Serve(const ServeOptions& options, const std::vector<grpc::Service*>& services) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!options.reflection) builder.SetOption(std::make_unique<WithoutReflection>());
  ApplyServerLimits(builder, options.keepalive_seconds);
  // Sync-server pollers wake at least this often, so a drain with nothing in flight
  // ends promptly instead of waiting out a poll.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::CQ_TIMEOUT_MSEC, 100);
  int port = 0;
  builder.AddListeningPort(
      options.listen, options.credentials ? options.credentials : grpc::InsecureServerCredentials(),
      &port);
  for (grpc::Service* s : services) builder.RegisterService(s);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(true);
  for (const std::string& name : options.health_services) health->SetServingStatus(name, true);
  if (!options.port_file.empty()) {
    absl::Status st = WritePortFile(options.port_file, port);
    if (!st.ok()) {
      server->Shutdown();
      return st;
    }
  }
  logging::Logf(logging::Level::kInfo, options.component,
                "serving on %s (port %d); reflection %s; keepalive %s", options.listen, port,
                options.reflection ? "on" : "off",
                options.keepalive_seconds > 0 ? absl::StrCat(options.keepalive_seconds, " s")
                                              : std::string("off"));

  int sig = WaitForShutdownSignal();
  for (; sig == SIGHUP; sig = WaitForShutdownSignal()) {
    logging::Logf(logging::Level::kInfo, options.component, "SIGHUP: reloading");
    if (options.on_reload) options.on_reload();
  }
  logging::Logf(logging::Level::kInfo, options.component,
                "%s: health NOT_SERVING, draining for up to %.1f s",
                sig == SIGTERM ? "SIGTERM" : "SIGINT", options.grace_seconds);
  health->SetServingStatus(false);
  for (const std::string& name : options.health_services) health->SetServingStatus(name, false);
  if (options.on_drain) options.on_drain();
  const auto deadline =
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(options.grace_seconds * 1000));
  server->Shutdown(deadline);
  server->Wait();
  logging::Logf(logging::Level::kInfo, options.component, "stopped");
  return absl::OkStatus();
}

}  // namespace kvstream::net
