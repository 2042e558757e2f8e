// kvstream-edge: serves EdgeService.Ask to clients and streams each request's prompt
// state to a kvstream-cloud. See --help.
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/base/log.h"
#include "common/base/memory.h"
#include "common/base/status.h"
#include "common/control/controller.h"
#include "common/metrics/metrics.h"
#include "common/model/model.h"
#include "common/model/tokenizer.h"
#include "common/net/daemon.h"
#include "common/net/daemon_flags.h"
#include "common/net/grpc_util.h"
#include "common/net/shaper.h"
#include "common/pipeline/mode.h"
#include "edge/edge_service.h"
#include "edge/policy.h"
#include "edge/replica_set.h"
#include "edge/replicas.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "gRPC listen address host:port for clients (port 0: any free port)");
ABSL_FLAG(std::string, port_file, "", "Write the bound gRPC port to this file once serving");
ABSL_FLAG(std::string, cloud, "127.0.0.1:50052",
          "The kvstream-cloud replicas, as a gRPC target: host:port, "
          "ipv4:10.0.0.1:50052,10.0.0.2:50052 or dns:///cloud.example:50052 (every address "
          "the name resolves to). Replicas must serve the same models (checked at start-up)");
ABSL_FLAG(bool, cloud_health_check, true,
          "Check each --cloud replica's gRPC health (for its model card, see --cloud) and send "
          "sessions only to SERVING ones. Turn off behind an L7 proxy (nginx grpc_pass), "
          "whose health answer comes from whichever replica the proxy picks");
ABSL_FLAG(std::string, cloud_lb, "round_robin",
          "How sessions spread over the --cloud replicas: round_robin (each Transfer stream to "
          "the next healthy replica; a replica whose health is NOT_SERVING, e.g. draining, or "
          "that is down gets none), least_loaded (the healthy replica with the most room: "
          "sessions and reserved cache bytes against its limits, polled every second; needs "
          "a target whose addresses the edge can list) or pick_first (one replica until it "
          "fails)");
ABSL_FLAG(
    std::string, scout, "testdata/models-2k/scout",
    "Scout model directory (HF format, with tokenizer.json): prefills, selects and, in kv mode, "
    "is the model whose cache is sent (the cloud must serve the same model)");
ABSL_FLAG(
    std::string, mode, "adaptive",
    "Default mode when a request names none: adaptive (the controller picks per request; needs "
    "--quality_table), kv, scout or text");
ABSL_FLAG(std::string, selector, "full",
          "Default selector: full, q2c, q2c-question, snapkv, h2o or random");
ABSL_FLAG(double, retention, 1.0, "Default share of context tokens the selector keeps, (0, 1]");
ABSL_FLAG(std::string, spec, "raw",
          "Default kv plan string, e.g. \"int8\" or \"k=int4/ch,v=int4,L0=f16,zstd=3\"; with "
          "\"tiers=N\" the cache goes most important tokens first, in N tiers, and under a TTFT "
          "target the cloud answers from the tiers that arrive in time (docs/codec.md)");
ABSL_FLAG(uint32_t, max_tokens, 32, "Default answer length cap");
ABSL_FLAG(std::string, cloud_model, "",
          "Default cloud model (by name) that answers in scout and text modes");
ABSL_FLAG(std::string, system_prompt, "Answer with the value from the context.",
          "System prompt when a request gives none");
ABSL_FLAG(uint64_t, chunk_bytes, 1 << 20,
          "Cap on one KvChunk's payload before zstd (gRPC limit: 16 MiB)");
ABSL_FLAG(bool, zero_copy_uplink, true,
          "Hand each chunk's payload to gRPC where it is, shared with the copy kept for a retry; "
          "false copies it into each message's buffer, as plain protobuf serializing does (to "
          "compare the two)");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9101",
          "Serve Prometheus /metrics here (empty: off)");
ABSL_FLAG(std::string, metrics_port_file, "", "Write the bound /metrics port to this file");
ABSL_FLAG(std::string, device, "cpu", "Compute device: cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "f32", "Compute and cache dtype: f32 or bf16");
ABSL_FLAG(
    int, threads, 0,
    "libtorch intra-op threads per model worker (0: cores / --model_workers, so workers x threads "
    "<= cores)");
ABSL_FLAG(int, model_workers, 0,
          "Requests that run the scout at once (prefill to encode); the rest queue (0: about "
          "sqrt(cores))");
ABSL_FLAG(
    int, max_queued, 32,
    "Requests waiting for a model worker; beyond this a request gets RESOURCE_EXHAUSTED at once. "
    "Queue time counts against the request's deadline");
ABSL_FLAG(double, shutdown_grace_seconds, 10,
          "On SIGTERM/SIGINT, time in-flight requests get to finish");
ABSL_FLAG(std::string, log_level, "info", "Log threshold: debug, info, warning or error");
ABSL_FLAG(double, uplink_mbps, 0,
          "Emulate an uplink of this many Mbit/s to the cloud (0: unshaped)");
ABSL_FLAG(std::string, uplink_trace, "",
          "Emulate an uplink following this bandwidth trace (\"seconds Mbit/s\" lines, repeated); "
          "overrides --uplink_mbps");
ABSL_FLAG(double, one_way_delay_ms, 0,
          "Emulated one-way delay, added to the first message each way per request");
ABSL_FLAG(std::string, quality_table, "testdata/quality/tiny2k_mixed.json",
          "JSON operating points with expected quality for adaptive mode, measured for the --scout "
          "/ --cloud_model "
          "pair (bench/make_quality_table.sh; empty: adaptive requests are UNIMPLEMENTED)");
ABSL_FLAG(double, ttft_target, 0,
          "Default TTFT target in seconds for adaptive requests (0: minimise TTFT)");
ABSL_FLAG(double, quality_floor, 0.9,
          "Adaptive: when minimising TTFT, accept points whose expected quality at the prompt's "
          "length is at least this share of the best servable point's there");
ABSL_FLAG(int, estimate_steps, 1,
          "Adaptive: before sending a kv / projected plan, rebuild it on the scout as the cloud "
          "would and compare this many next-token distributions (the prompt's last token, then "
          "the full cache's greedy tokens) with the full cache's; a plan that fails "
          "--estimate_min_agreement / --estimate_max_kl is rejected and the controller chooses "
          "again among the same selection's other specs, a selection keeping more or the whole "
          "cache, and text (kv's whole unquantized cache for a tenant without text) (0: off). "
          "One step costs one forward pass of the plan's cache; more steps add the "
          "reference's own passes, once per request");
ABSL_FLAG(int, estimate_selection_steps, 3,
          "Adaptive: a plan that keeps only the selected positions is probed over at least this "
          "many steps (0: --estimate_steps alone; the estimate is on with --estimate_steps > "
          "0). What a selection drops can matter only to a later answer token (the record a "
          "question's second hop needs), while quantizing the whole cache shows in the first. "
          "The probe ends where the full cache's answer ends, so a one-word answer takes two");
ABSL_FLAG(bool, estimate_history, true,
          "Adaptive, with the estimate: price each operating point's table quality down by the "
          "share of its recent estimates that rejected it (each verdict moves the share half "
          "way; every adaptive request takes a tenth off), so requests of a kind the table does "
          "not know stop paying for the same rejected choice; false: the table alone");
ABSL_FLAG(double, estimate_min_agreement, 1.0,
          "Adaptive: share of the estimate's steps whose greedy token must be the full cache's");
ABSL_FLAG(double, estimate_max_kl, 0,
          "Adaptive: largest mean KL divergence (nats per step) from the full cache's "
          "distributions a plan may show (0: no limit)");
ABSL_FLAG(bool, answer_check, true,
          "Projected requests: Commit carries the scout's first answer token and the prompt's "
          "ids, and the cloud answers from the prompt (prefilled, as text) when its first token "
          "from the projected cache differs; RequestStats.answer_check says which");
ABSL_FLAG(double, kv_min_confidence, -1,
          "Adaptive, with --estimate_steps: reject a kv plan (answered by the scout) when the "
          "scout's own probability of its first answer token is below this, and choose again "
          "among text and the same selection projected into the cloud model (0: off). The "
          "threshold belongs to the model pair: bench/calibrate_confidence.sh measures it "
          "(0.1 for testdata/models-2k, 0.5 for testdata/models). -1: the gate the quality "
          "table's kv rows were measured with (their \"kv_min_confidence\"), 0.5 when they "
          "do not say");
ABSL_FLAG(bool, estimate_overlap, true,
          "Adaptive: run the estimate while the plan's chunks are sent and hold Commit for its "
          "verdict (a rejected plan's stream is closed without Commit and the new choice sent), "
          "so the estimate does not add to TTFT; false: estimate before sending");
ABSL_FLAG(bool, layerwise, true,
          "kv / projected requests without a selector (adaptive ones with --estimate_overlap and "
          "no TTFT target, which is re-planned after the prefill instead): open the stream "
          "before the scout's prefill and send each layer as soon as it is computed, so the "
          "transfer overlaps the prefill; false: prefill, encode, then send");
ABSL_FLAG(double, initial_bandwidth_mbps, 100,
          "Adaptive: bandwidth assumed before any chunk ack was measured");
ABSL_FLAG(double, initial_rtt_ms, 20, "Adaptive: round-trip time assumed before any was measured");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "Require clients to send 'authorization: Bearer TOKEN' with a token whose SHA-256 is "
          "listed here "
          "('TENANT HEX' lines; re-read on SIGHUP). Empty: no authentication");
ABSL_FLAG(std::string, on_transfer_failure, "retry",
          "When the Transfer stream to the cloud breaks (UNAVAILABLE: the cloud died, restarted "
          "or drains, or the connection dropped) before any answer token reached the client: "
          "fail (return the error), retry (send the same payload again on a new stream) or text "
          "(send the prompt as text to the request's cloud model). The request's stats say "
          "which happened");
ABSL_FLAG(int, transfer_retries, 1,
          "Further Transfer streams after a broken one, 100-300 ms apart (doubling), within the "
          "request's deadline");
ABSL_FLAG(std::string, cloud_token_file, "",
          "File holding the bearer token this edge presents to the cloud");
ABSL_FLAG(std::string, tls_cert, "",
          "Serve clients over TLS with this PEM certificate (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "Require client certificates signed by this PEM CA (mutual TLS)");
ABSL_FLAG(std::string, cloud_tls_ca, "", "Reach the cloud over TLS, trusting this PEM CA");
ABSL_FLAG(std::string, cloud_tls_cert, "",
          "Client certificate (PEM) for a cloud that requires one");
ABSL_FLAG(std::string, cloud_tls_key, "", "PEM private key for --cloud_tls_cert");
ABSL_FLAG(std::string, cloud_tls_server_name, "",
          "Name to check the cloud's certificate against (default: the host)");

namespace {
int Fail(const std::string& message) {
  std::fprintf(stderr, "kvstream-edge: %s\n", message.c_str());
  return 1;
}

// Logs each probed replica's model card against the one most of them serve.
void LogReplicaCards(const std::vector<kvstream::edge::ReplicaCard>& probed,
                     const std::string& card) {
  using kvstream::logging::Level;
  const bool checked = absl::GetFlag(FLAGS_cloud_health_check);
  for (const auto& r : probed) {
    if (r.card.empty()) {
      kvstream::logging::Logf(Level::kWarning, "edge",
                              "cloud replica %s: no model card (%s); it gets sessions once its "
                              "health check for card %s passes",
                              r.address, r.error, card.empty() ? "(any)" : card);
    } else if (r.card != card) {
      kvstream::logging::Logf(Level::kError, "edge",
                              "cloud replica %s serves model card %s, not %s as most do: %s",
                              r.address, r.card, card,
                              checked ? "it gets no sessions (its health check for this card fails)"
                                      : "--cloud_health_check=false cannot pass it over");
    } else {
      kvstream::logging::Logf(Level::kInfo, "edge", "cloud replica %s: model card %s", r.address,
                              r.card);
    }
  }
}

struct CloudLink {
  std::shared_ptr<grpc::Channel> channel;
  std::shared_ptr<kvstream::edge::ReplicaSet> replica_set;  // --cloud_lb=least_loaded
  int replicas = 1;
};

// The cloud replicas: gRPC's round robin (or pick_first) over the target's addresses, or
// the edge's own least-loaded choice, health-checked for the model card most of them
// serve, so a replica serving another card is passed over.
absl::StatusOr<CloudLink> ConnectCloud(const std::string& target, const std::string& bearer,
                                       double keepalive_seconds) {
  const absl::StatusOr<int> reload = kvstream::net::TlsReloadSecondsFlag();
  if (!reload.ok()) return reload.status();
  const kvstream::net::TlsFiles tls{
      absl::GetFlag(FLAGS_cloud_tls_ca), absl::GetFlag(FLAGS_cloud_tls_cert),
      absl::GetFlag(FLAGS_cloud_tls_key), absl::GetFlag(FLAGS_cloud_tls_server_name), *reload};
  auto addresses = kvstream::edge::TargetAddresses(target);
  if (absl::IsNotFound(addresses.status())) {  // e.g. a Service with no ready pod yet
    kvstream::logging::Logf(kvstream::logging::Level::kWarning, "edge",
                            "%s; replicas are checked for health only",
                            addresses.status().message());
    addresses = std::vector<std::string>{};
  }
  if (!addresses.ok()) return addresses.status();
  const auto probed = kvstream::edge::ProbeReplicas(*addresses, tls, bearer, 2);
  const std::string card = kvstream::edge::ExpectedCard(probed);
  LogReplicaCards(probed, card);
  const std::string health =
      absl::GetFlag(FLAGS_cloud_health_check) ? kvstream::edge::HealthServiceFor(card) : "";
  CloudLink link;
  link.replicas = std::max<int>(1, static_cast<int>(addresses->size()));
  const std::string lb = absl::GetFlag(FLAGS_cloud_lb);
  if (lb == "least_loaded") {
    auto set = kvstream::edge::ReplicaSet::Start(
        {*addresses, tls, bearer, keepalive_seconds, health, /*poll_seconds=*/1});
    if (!set.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--cloud_lb: ", set.status().message()));
    }
    link.replica_set = std::move(*set);
    link.channel = link.replica_set->first_channel();
    return link;
  }
  auto config = kvstream::net::ReplicaServiceConfig(lb, health);
  if (!config.ok())
    return absl::InvalidArgumentError(absl::StrCat("--cloud_lb: ", config.status().message()));
  auto channel = kvstream::net::MakeChannel(target, tls, keepalive_seconds, *config);
  if (!channel.ok())
    return absl::InvalidArgumentError(absl::StrCat("--cloud_tls_*: ", channel.status().message()));
  link.channel = *channel;
  return link;
}

using kvstream::PrefixStatus;
using kvstream::edge::EdgeOptions;
namespace logging = kvstream::logging;

// --on_transfer_failure, --transfer_retries and the quality estimate's flags.
absl::Status ApplyTransferFlags(EdgeOptions& options) {
  auto on_failure =
      kvstream::edge::ParseOnTransferFailure(absl::GetFlag(FLAGS_on_transfer_failure));
  if (!on_failure.ok()) return PrefixStatus("--", on_failure.status());
  options.on_transfer_failure = *on_failure;
  options.transfer_retries = absl::GetFlag(FLAGS_transfer_retries);
  options.estimate_steps = absl::GetFlag(FLAGS_estimate_steps);
  options.estimate_selection_steps = absl::GetFlag(FLAGS_estimate_selection_steps);
  options.estimate_history = absl::GetFlag(FLAGS_estimate_history);
  options.estimate_min_agreement = absl::GetFlag(FLAGS_estimate_min_agreement);
  options.estimate_overlap = absl::GetFlag(FLAGS_estimate_overlap);
  options.answer_check = absl::GetFlag(FLAGS_answer_check);
  options.layerwise = absl::GetFlag(FLAGS_layerwise);
  options.estimate_max_kl = absl::GetFlag(FLAGS_estimate_max_kl);
  // Checked here, before the cloud is dialled; resolved against the table in ApplyGateFlag.
  if (const double g = absl::GetFlag(FLAGS_kv_min_confidence); !(g == -1 || (g >= 0 && g <= 1))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv_min_confidence: expected a probability in [0, 1] or -1 (the quality table's), "
        "found ",
        g));
  }
  if (options.estimate_steps < 0 || options.estimate_steps > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--estimate_steps: expected 0 to 64, found ", options.estimate_steps));
  }
  if (options.estimate_selection_steps < 0 || options.estimate_selection_steps > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--estimate_selection_steps: expected 0 to 64, found ", options.estimate_selection_steps));
  }
  if (!(options.estimate_min_agreement >= 0 && options.estimate_min_agreement <= 1) ||
      !(options.estimate_max_kl >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--estimate_min_agreement: expected 0 to 1, found ", options.estimate_min_agreement,
        "; --estimate_max_kl: expected >= 0, found ", options.estimate_max_kl));
  }
  if (options.transfer_retries < 0 || options.transfer_retries > 10) {
    return absl::InvalidArgumentError(
        absl::StrCat("--transfer_retries: expected 0 to 10, found ", options.transfer_retries));
  }
  return absl::OkStatus();
}

// --auth_tokens_file (clients' tokens) and --cloud_token_file (the edge's own).
absl::Status ApplyAuthFlags(EdgeOptions& options) {
  if (!absl::GetFlag(FLAGS_auth_tokens_file).empty()) {
    auto auth = kvstream::net::TokenAuthenticator::Load(absl::GetFlag(FLAGS_auth_tokens_file));
    if (!auth.ok()) return PrefixStatus("--auth_tokens_file: ", auth.status());
    options.auth = std::move(*auth);
    logging::Logf(logging::Level::kInfo, "edge", "authentication: %zu tokens from %s",
                  options.auth->size(), options.auth->path());
  }
  if (!absl::GetFlag(FLAGS_cloud_token_file).empty()) {
    auto token = kvstream::net::ReadBearerToken(absl::GetFlag(FLAGS_cloud_token_file));
    if (!token.ok()) return PrefixStatus("--cloud_token_file: ", token.status());
    options.cloud_token = *token;
  }
  return absl::OkStatus();
}

// The request defaults (--mode, --selector, ...), --chunk_bytes and adaptive's quality
// table, floor and initial link estimate.
absl::Status ApplyPolicyFlags(EdgeOptions& options) {
  options.system_prompt = absl::GetFlag(FLAGS_system_prompt);
  options.chunk_bytes = absl::GetFlag(FLAGS_chunk_bytes);
  options.zero_copy_uplink = absl::GetFlag(FLAGS_zero_copy_uplink);
  if (options.chunk_bytes < 1024 || options.chunk_bytes > (8u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--chunk_bytes: expected 1024..8388608 (chunks stay under the 16 MiB message "
                     "limit), found ",
                     options.chunk_bytes));
  }
  auto mode = kvstream::pipeline::ParseMode(absl::GetFlag(FLAGS_mode));
  if (!mode.ok()) return PrefixStatus("--", mode.status());
  kvstream::v1::Policy& d = options.defaults;
  d.set_mode(*mode);
  d.set_selector(absl::GetFlag(FLAGS_selector));
  d.set_retention(absl::GetFlag(FLAGS_retention));
  d.set_spec(absl::GetFlag(FLAGS_spec));
  d.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  d.set_cloud_model(absl::GetFlag(FLAGS_cloud_model));
  d.set_ttft_target_seconds(absl::GetFlag(FLAGS_ttft_target));
  if (!absl::GetFlag(FLAGS_quality_table).empty()) {
    auto table = kvstream::control::LoadQualityTable(absl::GetFlag(FLAGS_quality_table));
    if (!table.ok()) return PrefixStatus("--quality_table: ", table.status());
    options.quality_table = std::move(*table);
  } else if (*mode == kvstream::v1::MODE_ADAPTIVE) {
    return absl::InvalidArgumentError("--mode=adaptive needs --quality_table");
  }
  if (absl::GetFlag(FLAGS_quality_floor) < 0 || absl::GetFlag(FLAGS_quality_floor) > 1) {
    return absl::InvalidArgumentError("--quality_floor: expected a share in [0, 1]");
  }
  options.quality_floor = absl::GetFlag(FLAGS_quality_floor);
  options.initial_bandwidth_bps = absl::GetFlag(FLAGS_initial_bandwidth_mbps) * 1e6;
  options.initial_rtt_seconds = absl::GetFlag(FLAGS_initial_rtt_ms) / 1000;
  if (options.initial_bandwidth_bps <= 0) {
    return absl::InvalidArgumentError("--initial_bandwidth_mbps must be > 0");
  }
  return absl::OkStatus();
}

// --kv_min_confidence, or (-1) the gate the quality table was measured with, said in the
// log either way, with a warning when the two differ or when the gate cannot run.
absl::Status ApplyGateFlag(EdgeOptions& options) {
  const double flag = absl::GetFlag(FLAGS_kv_min_confidence);
  const std::optional<double> table = kvstream::control::MeasuredKvGate(options.quality_table);
  options.kv_min_confidence = flag >= 0 ? flag : table.value_or(0.5);
  const char* from = flag >= 0 ? "--kv_min_confidence"
                     : table   ? "the quality table's kv rows"
                     : options.quality_table.empty()
                         ? "the default; no quality table"
                         : "the default; the quality table does not say";
  logging::Logf(logging::Level::kInfo, "edge", "kv confidence gate %g (%s)",
                options.kv_min_confidence, from);
  if (flag >= 0 && table && *table != flag) {
    logging::Logf(logging::Level::kWarning, "edge",
                  "--kv_min_confidence %g differs from the %g the quality table's kv rows were "
                  "measured with: their quality may not hold",
                  flag, *table);
  }
  if (options.kv_min_confidence > 0 && options.estimate_steps == 0 &&
      !options.quality_table.empty()) {
    logging::Logf(logging::Level::kWarning, "edge",
                  "the kv confidence gate runs with the quality estimate only; with "
                  "--estimate_steps=0 the scout's unsure kv answers are sent as they are");
  }
  return absl::OkStatus();
}

// A quality table measured with another scout prices this one's plans by another
// model's answers: said at start-up, since adaptive would otherwise choose by them quietly.
void WarnIfTableIsAnotherScouts(const EdgeOptions& options, const kvstream::model::Model& scout) {
  const std::optional<std::string> measured =
      kvstream::control::MeasuredScout(options.quality_table);
  if (!measured || *measured == scout.fingerprint()) return;
  const bool gate_too = absl::GetFlag(FLAGS_kv_min_confidence) < 0 &&
                        kvstream::control::MeasuredKvGate(options.quality_table).has_value();
  logging::Logf(logging::Level::kWarning, "edge",
                "--quality_table %s was measured with scout %s, not this edge's %s (%s): its "
                "quality figures%s may not hold; measure one with bench/make_quality_table.sh",
                absl::GetFlag(FLAGS_quality_table), *measured, scout.fingerprint(),
                absl::GetFlag(FLAGS_scout),
                gate_too ? " and the kv confidence gate taken from it" : "");
}

// Uplink emulation: --uplink_trace or --uplink_mbps, and --one_way_delay_ms.
absl::Status ApplyLinkFlags(EdgeOptions& options) {
  const double delay = absl::GetFlag(FLAGS_one_way_delay_ms) / 1000;
  if (delay < 0 || absl::GetFlag(FLAGS_uplink_mbps) < 0) {
    return absl::InvalidArgumentError("--one_way_delay_ms and --uplink_mbps must be >= 0");
  }
  using kvstream::net::LinkTrace;
  using kvstream::net::Shaper;
  if (!absl::GetFlag(FLAGS_uplink_trace).empty()) {
    auto trace = LinkTrace::Load(absl::GetFlag(FLAGS_uplink_trace));
    if (!trace.ok()) return PrefixStatus("--uplink_trace: ", trace.status());
    options.shaper = std::make_shared<Shaper>(std::move(*trace), delay);
  } else if (absl::GetFlag(FLAGS_uplink_mbps) > 0) {
    options.shaper =
        std::make_shared<Shaper>(LinkTrace::Constant(absl::GetFlag(FLAGS_uplink_mbps)), delay);
  } else if (delay > 0) {  // delay only: an unconstrained rate
    options.shaper = std::make_shared<Shaper>(LinkTrace::Constant(1e6), delay);
  }
  if (options.shaper != nullptr) {
    logging::Logf(logging::Level::kInfo, "edge", "uplink emulation: %s, one-way delay %.1f ms",
                  absl::GetFlag(FLAGS_uplink_trace).empty()
                      ? absl::StrCat(options.shaper->trace().RateAt(0), " Mbit/s")
                      : absl::StrCat("trace ", absl::GetFlag(FLAGS_uplink_trace)),
                  delay * 1000);
  }
  return absl::OkStatus();
}

// The scout's prefill cost against prompt length, for the adaptive cost model: timed at
// two lengths, plain and collecting statistics for a selector over a question at the
// end, best of three (start-up is noisy), and fitted as a*n + b*n^2.
absl::Status TimeScoutPrefill(kvstream::model::Model& scout, EdgeOptions& options) {
  const int max_n = scout.config().max_position_embeddings / 2;
  const int n2 = std::min(512, max_n), n1 = std::max(16, n2 / 4);
  std::mt19937 rng(7);
  std::vector<int32_t> tokens(n2);
  for (int32_t& t : tokens) {
    t = static_cast<int32_t>(rng() % static_cast<uint32_t>(scout.config().vocab_size));
  }
  (void)scout.Prefill(tokens);  // warm-up: first-call allocations are not prefill cost
  auto time_prefill = [&](int n, bool stats) {
    kvstream::model::PrefillOptions po;
    po.collect_stats = stats;
    po.spans.num_tokens = n;
    po.spans.context_begin = 8;
    po.spans.context_end = n - 12;
    po.spans.question_begin = n - 10;
    po.spans.question_end = n - 4;
    double best = 0;
    for (int round = 0; round < 3; ++round) {
      const auto t0 = std::chrono::steady_clock::now();
      auto pre = scout.Prefill(absl::MakeSpan(tokens).subspan(0, n), po);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (pre.ok() && (best == 0 || s < best)) best = s;
    }
    return best;
  };
  for (const bool stats : {false, true}) {
    const double t1 = time_prefill(n1, stats), t2 = time_prefill(n2, stats);
    auto cost = kvstream::control::PrefillCost::Fit(n1, t1, n2, t2);
    if (!cost.ok()) return PrefixStatus("timing the scout's prefill: ", cost.status());
    (stats ? options.edge_prefill_stats : options.edge_prefill) = *cost;
    logging::Logf(logging::Level::kInfo, "edge",
                  "scout prefill%s: %d tokens in %.1f ms, %d in %.1f ms",
                  stats ? " with statistics" : "", n1, t1 * 1e3, n2, t2 * 1e3);
  }
  return absl::OkStatus();
}

// Options from every flag, the cloud connected; `so` gets the shared daemon flags.
absl::StatusOr<EdgeOptions> OptionsFromFlags(kvstream::net::ServeOptions& so) {
  RETURN_IF_ERROR(kvstream::net::ApplyDaemonFlags(so));
  EdgeOptions options;
  options.cloud_address = absl::GetFlag(FLAGS_cloud);
  options.max_streams_per_peer = kvstream::net::MaxStreamsPerPeerFlag();
  RETURN_IF_ERROR(ApplyTransferFlags(options));
  RETURN_IF_ERROR(ApplyAuthFlags(options));
  ASSIGN_OR_RETURN(const CloudLink link,
                   ConnectCloud(options.cloud_address, options.cloud_token, so.keepalive_seconds));
  options.cloud_channel = link.channel;
  options.replica_set = link.replica_set;
  options.cloud_replicas = link.replicas;
  kvstream::net::WarnIfOpen("edge", absl::GetFlag(FLAGS_listen),
                            !absl::GetFlag(FLAGS_tls_cert).empty(), options.auth != nullptr);
  RETURN_IF_ERROR(ApplyPolicyFlags(options));
  RETURN_IF_ERROR(ApplyGateFlag(options));
  RETURN_IF_ERROR(ApplyLinkFlags(options));
  ASSIGN_OR_RETURN(
      const kvstream::base::WorkerSplit split,
      kvstream::net::SplitCores("edge", absl::GetFlag(FLAGS_model_workers),
                                absl::GetFlag(FLAGS_threads), absl::GetFlag(FLAGS_max_queued)));
  options.model_workers = split.workers;
  options.max_queued = absl::GetFlag(FLAGS_max_queued);
  // A request encodes its chunks while it holds its model worker: on that worker's cores.
  options.encode_threads = split.threads;
  kvstream::model::SetComputeThreads(split.threads);
  return options;
}

absl::Status Run() {
  RETURN_IF_ERROR(logging::SetLevelByName(absl::GetFlag(FLAGS_log_level)));
  logging::Logf(logging::Level::kInfo, "edge", "%s", kvstream::base::KeepFreedMemoryForReuse());
  // Before any model or server thread allocates.
  RETURN_IF_ERROR(kvstream::net::LimitArenasFromFlag("edge", absl::GetFlag(FLAGS_model_workers)));
  kvstream::net::ServeOptions so;
  ASSIGN_OR_RETURN(EdgeOptions options, OptionsFromFlags(so));
  const absl::StatusOr<int> reload = kvstream::net::TlsReloadSecondsFlag();
  if (!reload.ok()) return reload.status();
  auto credentials = kvstream::net::ServerCredentials({absl::GetFlag(FLAGS_tls_client_ca),
                                                       absl::GetFlag(FLAGS_tls_cert),
                                                       absl::GetFlag(FLAGS_tls_key), "", *reload});
  if (!credentials.ok()) return PrefixStatus("--tls_*: ", credentials.status());
  kvstream::model::RuntimeOptions runtime;
  runtime.device = absl::GetFlag(FLAGS_device);
  runtime.dtype = absl::GetFlag(FLAGS_dtype);
  const std::string dir = absl::GetFlag(FLAGS_scout);
  auto scout = kvstream::model::Model::Load(dir, runtime);
  if (!scout.ok()) return PrefixStatus("--scout: ", scout.status());
  auto tokenizer = kvstream::model::Tokenizer::Load(dir + "/tokenizer.json");
  if (!tokenizer.ok()) return PrefixStatus("--scout: ", tokenizer.status());
  WarnIfTableIsAnotherScouts(options, **scout);
  // The defaults must be servable: check them the way a request would be.
  if (auto p = kvstream::edge::ResolvePolicy({}, options.defaults, (*scout)->config().num_layers);
      !p.ok()) {
    return PrefixStatus("default policy: ", p.status());
  }
  RETURN_IF_ERROR(TimeScoutPrefill(**scout, options));
  logging::Logf(logging::Level::kInfo, "edge",
                "scout %s (%s); cloud %s; default mode %s, selector %s, spec %s", dir,
                (*scout)->fingerprint(), options.cloud_address, absl::GetFlag(FLAGS_mode),
                absl::GetFlag(FLAGS_selector), absl::GetFlag(FLAGS_spec));
  kvstream::metrics::MetricsServer metrics;
  RETURN_IF_ERROR(kvstream::net::StartMetrics(metrics, absl::GetFlag(FLAGS_metrics_address),
                                              absl::GetFlag(FLAGS_metrics_port_file)));
  kvstream::edge::EdgeService service(std::move(*scout), std::move(*tokenizer), options, metrics);
  so.component = "edge";
  so.listen = absl::GetFlag(FLAGS_listen);
  so.port_file = absl::GetFlag(FLAGS_port_file);
  so.grace_seconds = absl::GetFlag(FLAGS_shutdown_grace_seconds);
  so.health_services = {"kvstream.v1.EdgeService"};
  so.credentials = *credentials;
  so.on_drain = [&service] { service.Drain(); };
  so.on_reload = [auth = options.auth] { kvstream::net::ReloadTokens("edge", auth.get()); };
  return kvstream::net::Serve(so, {&service});
}
}  // namespace

int main(int argc, char** argv) {
  kvstream::net::BlockShutdownSignals();
  // --help lists this daemon's own flags.
  kvstream::net::SetDaemonUsage(
      "edge/main.cc",
      "answers questions about long contexts by streaming the scout model's compressed KV cache "
      "to kvstream-cloud.\nUsage: kvstream-edge --scout=DIR --cloud=HOST:PORT [--listen=HOST:PORT] "
      "[flags]");
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "'"));
  if (absl::Status st = Run(); !st.ok()) return Fail(std::string(st.message()));
  return 0;
}
