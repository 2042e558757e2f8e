// kvstream-cloud: serves CloudService (Transfer, GetInfo) for edge daemons, plus health,
// reflection and /metrics. See --help.
#include <cstdio>
#include <list>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cloud/cloud_service.h"
#include "common/base/log.h"
#include "common/base/memory.h"
#include "common/base/status.h"
#include "common/metrics/metrics.h"
#include "common/net/daemon.h"
#include "common/net/daemon_flags.h"
#include "common/net/grpc_util.h"

ABSL_FLAG(
    std::vector<std::string>, model, {},
    "Model to serve as NAME=DIR (an HF directory: config.json, model.safetensors, tokenizer.json). "
    "Repeat the flag or separate with commas; kv sessions pick a model by fingerprint, scout and "
    "text "
    "sessions by NAME");
ABSL_FLAG(std::vector<std::string>, projection, {},
          "Projection file to serve (kvstream fit-projection): projected sessions from its source "
          "model (by "
          "fingerprint) are answered by the served --model it was fitted for. Repeat or separate "
          "with commas");
ABSL_FLAG(std::string, listen, "0.0.0.0:50052",
          "gRPC listen address host:port (port 0: any free port)");
ABSL_FLAG(std::string, port_file, "", "Write the bound gRPC port to this file once serving");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9102",
          "Serve Prometheus /metrics here (empty: off)");
ABSL_FLAG(std::string, metrics_port_file, "", "Write the bound /metrics port to this file");
ABSL_FLAG(uint32_t, max_sessions, 16,
          "Transfer sessions open at once; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(uint64_t, cache_budget_bytes, 1ull << 30,
          "Cache bytes all open sessions may reserve together (prompt slots + max_tokens, per "
          "layer, K and V); "
          "beyond it RESOURCE_EXHAUSTED");
ABSL_FLAG(uint32_t, max_new_tokens, 512, "Largest max_tokens a session may ask for");
ABSL_FLAG(std::string, device, "cpu", "Compute device: cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "f32", "Compute and cache dtype: f32 or bf16");
ABSL_FLAG(
    int, threads, 0,
    "libtorch intra-op threads per model worker (0: cores / --model_workers, so workers x threads "
    "<= cores)");
ABSL_FLAG(int, model_workers, 0,
          "Sessions that run a model at once (Commit through generation); the rest queue (0: about "
          "sqrt(cores))");
ABSL_FLAG(
    int, max_queued, 32,
    "Committed sessions waiting for a model worker; beyond this a session gets RESOURCE_EXHAUSTED "
    "at once. Queue time counts against the session's deadline");
ABSL_FLAG(
    std::string, auth_tokens_file, "",
    "Require edges to send 'authorization: Bearer TOKEN' with a token whose SHA-256 is listed here "
    "('TENANT HEX' lines; re-read on SIGHUP). Empty: no authentication");
ABSL_FLAG(double, open_timeout_seconds, 10,
          "A Transfer stream that sends no SessionOpen within this many seconds is cancelled (0: "
          "no limit)");
ABSL_FLAG(double, idle_timeout_seconds, 30,
          "An open session that sends nothing for this many seconds before Commit is cancelled and "
          "its slot "
          "freed (0: no limit)");
ABSL_FLAG(double, resume_window_seconds, 10,
          "How long a kv or projected session whose Transfer stream broke before Commit is kept "
          "(its chunks, session slot and cache bytes) for the edge to resume it and re-send only "
          "the chunks not applied; 0: not kept, the edge sends again from the start");
ABSL_FLAG(bool, zero_copy_uplink, true,
          "Keep each received chunk's payload in the gRPC buffers it arrived in and write the "
          "cache from there; false copies it into its message first, as plain protobuf parsing "
          "does (to compare the two)");
ABSL_FLAG(bool, measure_rates, true,
          "Measure each model's prefill and decode rate at start-up (for GetInfo)");
ABSL_FLAG(double, emulate_prefill_tps, 0,
          "Emulate a slower model: pad prefill to this many tokens/s (0: real speed); GetInfo "
          "reports it");
ABSL_FLAG(double, emulate_decode_tps, 0,
          "Emulate a slower model: pad decode to this many tokens/s (0: real speed)");
ABSL_FLAG(double, shutdown_grace_seconds, 10,
          "On SIGTERM/SIGINT, time in-flight sessions get to finish");
ABSL_FLAG(std::string, log_level, "info", "Log threshold: debug, info, warning or error");
ABSL_FLAG(std::string, tls_cert, "",
          "Serve edges over TLS with this PEM certificate (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "Require edge certificates signed by this PEM CA (mutual TLS)");

namespace {

// absl flags keep the last of repeated flags; --model and --projection are repeatable, so
// each one's occurrences are joined into one comma-separated value before parsing.
std::vector<char*> JoinRepeatedFlags(int argc, char** argv, std::list<std::string>& joined) {
  std::vector<char*> out{argv[0]};
  std::map<std::string, std::vector<std::string>> values;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    bool taken = false;
    for (const std::string name : {"model", "projection"}) {
      const std::string prefix = "--" + name + "=";
      if (a.rfind(prefix, 0) == 0) {
        values[name].push_back(a.substr(prefix.size()));
        taken = true;
      } else if (a == "--" + name && i + 1 < argc) {
        values[name].push_back(argv[++i]);
        taken = true;
      }
      if (taken) break;
    }
    if (!taken) out.push_back(argv[i]);
  }
  for (const auto& [name, list] : values) {
    joined.push_back("--" + name + "=" + absl::StrJoin(list, ","));
    out.push_back(joined.back().data());
  }
  return out;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "kvstream-cloud: %s\n", message.c_str());
  return 1;
}

namespace logging = kvstream::logging;
using kvstream::PrefixStatus;

// Every --model NAME=DIR, loaded and (with --measure_rates) timed.
absl::StatusOr<std::vector<kvstream::cloud::ServedModel>> LoadModels(
    const kvstream::model::RuntimeOptions& runtime) {
  std::vector<kvstream::cloud::ServedModel> models;
  for (const std::string& spec : absl::GetFlag(FLAGS_model)) {
    const std::vector<std::string> parts = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model: expected NAME=DIR, found '", spec, "'"));
    }
    for (const auto& m : models) {
      if (m.name == parts[0]) {
        return absl::InvalidArgumentError(
            absl::StrCat("--model: name '", parts[0], "' given twice"));
      }
    }
    auto served = kvstream::cloud::LoadServedModel(parts[0], parts[1], runtime,
                                                   absl::GetFlag(FLAGS_measure_rates) ? 256 : 0);
    if (!served.ok()) return PrefixStatus(absl::StrCat("--model ", spec, ": "), served.status());
    std::string timings;
    for (const auto& [tokens, seconds] : served->prefill_timings) {
      absl::StrAppend(&timings, timings.empty() ? " (" : ", ", tokens, " in ",
                      absl::StrFormat("%.1f ms", seconds * 1e3));
    }
    if (!timings.empty()) timings += ")";
    logging::Logf(logging::Level::kInfo, "cloud",
                  "model %s from %s: %s, prefill %.0f tokens/s%s, decode %.0f tokens/s",
                  served->name, parts[1], served->model->fingerprint(),
                  served->prefill_tokens_per_second, timings, served->decode_tokens_per_second);
    models.push_back(std::move(*served));
  }
  return models;
}

// Every --projection FILE, checked against the models it maps between.
absl::StatusOr<std::vector<kvstream::cloud::ServedProjection>> LoadProjections(
    const std::vector<kvstream::cloud::ServedModel>& models) {
  std::vector<kvstream::cloud::ServedProjection> projections;
  for (const std::string& path : absl::GetFlag(FLAGS_projection)) {
    auto p =
        kvstream::cloud::LoadServedProjection(path, models, absl::GetFlag(FLAGS_measure_rates));
    if (!p.ok()) return PrefixStatus(absl::StrCat("--projection ", path, ": "), p.status());
    const kvstream::model::ProjectionHeader& h = p->projection->header();
    logging::Logf(logging::Level::kInfo, "cloud", "projection %s: %s -> model %s, %.0f slots/s",
                  path, h.source.fingerprint, models[p->target].name, p->tokens_per_second);
    projections.push_back(std::move(*p));
  }
  return projections;
}

// The service's limits, timeouts and authentication from the flags.
absl::StatusOr<kvstream::cloud::CloudOptions> OptionsFromFlags(int model_workers) {
  kvstream::cloud::CloudOptions options;
  options.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  options.max_streams_per_peer = kvstream::net::MaxStreamsPerPeerFlag();
  options.cache_budget_bytes = absl::GetFlag(FLAGS_cache_budget_bytes);
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.emulate_prefill_tokens_per_second = absl::GetFlag(FLAGS_emulate_prefill_tps);
  options.emulate_decode_tokens_per_second = absl::GetFlag(FLAGS_emulate_decode_tps);
  options.model_workers = model_workers;
  options.open_timeout_seconds = absl::GetFlag(FLAGS_open_timeout_seconds);
  options.idle_timeout_seconds = absl::GetFlag(FLAGS_idle_timeout_seconds);
  options.resume_window_seconds = absl::GetFlag(FLAGS_resume_window_seconds);
  options.max_queued = absl::GetFlag(FLAGS_max_queued);
  options.zero_copy_uplink = absl::GetFlag(FLAGS_zero_copy_uplink);
  if (!absl::GetFlag(FLAGS_auth_tokens_file).empty()) {
    auto auth = kvstream::net::TokenAuthenticator::Load(absl::GetFlag(FLAGS_auth_tokens_file));
    if (!auth.ok()) return PrefixStatus("--auth_tokens_file: ", auth.status());
    options.auth = std::move(*auth);
    logging::Logf(logging::Level::kInfo, "cloud", "authentication: %zu tokens from %s",
                  options.auth->size(), options.auth->path());
  }
  kvstream::net::WarnIfOpen("cloud", absl::GetFlag(FLAGS_listen),
                            !absl::GetFlag(FLAGS_tls_cert).empty(), options.auth != nullptr);
  return options;
}

absl::Status Run() {
  RETURN_IF_ERROR(logging::SetLevelByName(absl::GetFlag(FLAGS_log_level)));
  if (absl::GetFlag(FLAGS_model).empty()) {
    return absl::InvalidArgumentError("no --model given; expected at least one NAME=DIR");
  }
  logging::Logf(logging::Level::kInfo, "cloud", "%s", kvstream::base::KeepFreedMemoryForReuse());
  // Before any model or server thread allocates.
  RETURN_IF_ERROR(kvstream::net::LimitArenasFromFlag("cloud", absl::GetFlag(FLAGS_model_workers)));
  kvstream::net::ServeOptions so;
  RETURN_IF_ERROR(kvstream::net::ApplyDaemonFlags(so));
  const absl::StatusOr<int> reload = kvstream::net::TlsReloadSecondsFlag();
  if (!reload.ok()) return reload.status();
  auto credentials = kvstream::net::ServerCredentials({absl::GetFlag(FLAGS_tls_client_ca),
                                                       absl::GetFlag(FLAGS_tls_cert),
                                                       absl::GetFlag(FLAGS_tls_key), "", *reload});
  if (!credentials.ok()) return PrefixStatus("--tls_*: ", credentials.status());
  // Metrics first: a taken port fails fast, before the slow model load.
  kvstream::metrics::MetricsServer metrics;
  RETURN_IF_ERROR(kvstream::net::StartMetrics(metrics, absl::GetFlag(FLAGS_metrics_address),
                                              absl::GetFlag(FLAGS_metrics_port_file)));
  ASSIGN_OR_RETURN(
      const kvstream::base::WorkerSplit split,
      kvstream::net::SplitCores("cloud", absl::GetFlag(FLAGS_model_workers),
                                absl::GetFlag(FLAGS_threads), absl::GetFlag(FLAGS_max_queued)));
  kvstream::model::SetComputeThreads(split.threads);
  kvstream::model::RuntimeOptions runtime;
  runtime.device = absl::GetFlag(FLAGS_device);
  runtime.dtype = absl::GetFlag(FLAGS_dtype);
  ASSIGN_OR_RETURN(std::vector<kvstream::cloud::ServedModel> models, LoadModels(runtime));
  ASSIGN_OR_RETURN(kvstream::cloud::CloudOptions options, OptionsFromFlags(split.workers));
  ASSIGN_OR_RETURN(std::vector<kvstream::cloud::ServedProjection> projections,
                   LoadProjections(models));
  kvstream::cloud::CloudService service(std::move(models), std::move(projections), options,
                                        metrics);
  so.component = "cloud";
  so.listen = absl::GetFlag(FLAGS_listen);
  so.port_file = absl::GetFlag(FLAGS_port_file);
  so.grace_seconds = absl::GetFlag(FLAGS_shutdown_grace_seconds);
  // The card's name lets edges' health checks pass over replicas serving other models.
  so.health_services = {"kvstream.v1.CloudService",
                        absl::StrCat("kvstream.v1.CloudService/", service.model_card())};
  logging::Logf(logging::Level::kInfo, "cloud", "model card %s", service.model_card());
  so.credentials = *credentials;
  so.on_drain = [&service] { service.Drain(); };
  so.on_reload = [auth = options.auth] { kvstream::net::ReloadTokens("cloud", auth.get()); };
  return kvstream::net::Serve(so, {&service});
}

}  // namespace

int main(int argc, char** argv) {
  kvstream::net::BlockShutdownSignals();
  // --help lists this daemon's own flags.
  kvstream::net::SetDaemonUsage(
      "cloud/main.cc",
      "rebuilds KV caches streamed by kvstream-edge and generates answers.\n"
      "Usage: kvstream-cloud --model=large=DIR --model=scout=DIR [--listen=HOST:PORT] [flags]");
  std::list<std::string> joined;
  std::vector<char*> args = JoinRepeatedFlags(argc, argv, joined);
  const std::vector<char*> rest =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "'"));
  if (absl::Status st = Run(); !st.ok()) return Fail(std::string(st.message()));
  return 0;
}
