#include "edge/edge_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/base/log.h"
#include "common/base/quote.h"
#include "common/base/status.h"
#include "common/codec/positions.h"
#include "common/codec/quantize.h"
#include "common/model/chat.h"
#include "common/model/kv_chunks.h"
#include "common/model/quality_probe.h"
#include "common/net/grpc_util.h"
#include "common/pipeline/pipeline.h"
#include "edge/layer_sender.h"

namespace kvstream::edge {
namespace {

using Clock = std::chrono::steady_clock;
using kvstream::v1::AskEvent;
using kvstream::v1::Downlink;
using kvstream::v1::Uplink;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CANCELLED or DEADLINE_EXCEEDED when the client is gone or out of time.
absl::Status CheckAlive(grpc::ServerContext* context, const char* stage) {
  if (!context->IsCancelled()) return absl::OkStatus();
  if (context->deadline() <= std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError(absl::StrCat("deadline passed before ", stage));
  }
  return absl::CancelledError(absl::StrCat("client cancelled before ", stage));
}

}  // namespace

struct EdgeService::Metrics {
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Counter>& tenant_requests;
  prometheus::Family<prometheus::Counter>& raw_bytes;
  prometheus::Family<prometheus::Counter>& wire_bytes;
  prometheus::Family<prometheus::Histogram>& stages;
  prometheus::Family<prometheus::Histogram>& ttft;
  prometheus::Family<prometheus::Histogram>& ratio;
  prometheus::Gauge& active;
  prometheus::Gauge& bandwidth;
  prometheus::Gauge& rtt;
  prometheus::Family<prometheus::Counter>& decisions;
  prometheus::Family<prometheus::Gauge>& prefill_scale;
  prometheus::Family<prometheus::Gauge>& rejection_share;
  prometheus::Gauge& workers_busy;
  prometheus::Gauge& queued;
  prometheus::Histogram& queue_wait;

  explicit Metrics(prometheus::Registry& r)
      : requests(prometheus::BuildCounter()
                     .Name("kvstream_edge_requests_total")
                     .Help("Ask requests by mode and final gRPC status code")
                     .Register(r)),
        tenant_requests(prometheus::BuildCounter()
                            .Name("kvstream_edge_tenant_requests_total")
                            .Help("Ask requests by tenant (token file) and final gRPC status "
                                  "code; only with --auth_tokens_file")
                            .Register(r)),
        raw_bytes(prometheus::BuildCounter()
                      .Name("kvstream_edge_raw_kv_bytes_total")
                      .Help("Full KV cache of the answering model at 16 bits, per served request")
                      .Register(r)),
        wire_bytes(prometheus::BuildCounter()
                       .Name("kvstream_edge_wire_bytes_total")
                       .Help("Serialized bytes sent to the cloud (SessionOpen, KvChunks, Commit)")
                       .Register(r)),
        stages(prometheus::BuildHistogram()
                   .Name("kvstream_edge_stage_seconds")
                   .Help("Time per edge stage: tokenize, prefill, select, encode, transfer")
                   .Register(r)),
        ttft(prometheus::BuildHistogram()
                 .Name("kvstream_edge_ttft_seconds")
                 .Help("Request arrival to first answer token relayed, by mode")
                 .Register(r)),
        ratio(prometheus::BuildHistogram()
                  .Name("kvstream_edge_compression_ratio")
                  .Help("Raw KV bytes at 16 bits over wire bytes, by mode")
                  .Register(r)),
        active(prometheus::BuildGauge()
                   .Name("kvstream_edge_active_requests")
                   .Help("Ask requests in flight")
                   .Register(r)
                   .Add({})),
        bandwidth(
            prometheus::BuildGauge()
                .Name("kvstream_edge_uplink_estimated_bytes_per_second")
                .Help("Uplink bandwidth estimated from chunk acks (harmonic mean of recent chunks)")
                .Register(r)
                .Add({})),
        rtt(prometheus::BuildGauge()
                .Name("kvstream_edge_uplink_estimated_rtt_seconds")
                .Help("Round-trip time: the fastest SessionOpen -> Opened of recent requests")
                .Register(r)
                .Add({})),
        decisions(prometheus::BuildCounter()
                      .Name("kvstream_edge_adaptive_decisions_total")
                      .Help("Modes the adaptive controller chose")
                      .Register(r)),
        prefill_scale(
            prometheus::BuildGauge()
                .Name("kvstream_edge_prefill_cost_scale")
                .Help("Recent prefill time over the start-up fit (1: as fast as at start-up): the "
                      "scout's, plain or with attention statistics, and each cloud model's")
                .Register(r)),
        rejection_share(prometheus::BuildGauge()
                            .Name("kvstream_edge_estimate_rejection_share")
                            .Help("Adaptive: each operating point's recent share of quality "
                                  "estimates that rejected it (its quality is priced down by it)")
                            .Register(r)),
        workers_busy(
            prometheus::BuildGauge()
                .Name("kvstream_edge_model_workers_busy")
                .Help("Model worker slots held (prefill to encode); capacity --model_workers")
                .Register(r)
                .Add({})),
        queued(prometheus::BuildGauge()
                   .Name("kvstream_edge_queued_requests")
                   .Help("Requests waiting for a model worker; capacity --max_queued")
                   .Register(r)
                   .Add({})),
        queue_wait(prometheus::BuildHistogram()
                       .Name("kvstream_edge_queue_wait_seconds")
                       .Help("Time requests that ran the scout waited for a model worker")
                       .Register(r)
                       .Add({}, metrics::SecondsBuckets())) {
    // Every mode from the start, so dashboards and alerts see zeros, not missing series.
    for (const char* mode : {"kv", "scout", "text", "projected"}) decisions.Add({{"mode", mode}});
  }

  void Stage(const char* name, double seconds) {
    stages.Add({{"stage", name}}, metrics::SecondsBuckets()).Observe(seconds);
  }
  // Every edge stage a request ran, once it has ended (whatever its outcome), from the
  // same figures as its RequestStats; `prefill` is the scout's alone.
  void Stages(const kvstream::v1::StageSeconds& s, double edge_prefill) {
    const std::pair<const char*, double> ran[] = {
        {"tokenize", s.tokenize()}, {"prefill", edge_prefill},  {"select", s.select()},
        {"encode", s.encode()},     {"estimate", s.estimate()}, {"overlap", s.overlap()},
        {"transfer", s.transfer()}};
    for (const auto& [name, seconds] : ran) {
      if (seconds > 0) Stage(name, seconds);
    }
  }
};

// One Ask's state as it moves through the stages (Prepare -> BuildPayload -> Transfer).
struct EdgeService::Request {
  kvstream::v1::Mode mode = kvstream::v1::MODE_UNSPECIFIED;
  kvstream::v1::RequestStats stats;
  Clock::time_point start;
  ResolvedPolicy policy;
  model::ChatPrompt prompt;
  std::vector<int32_t> head;      // the prompt but its last token, which the cloud feeds first
  select::PromptSpans spans;      // over `head`
  bool sends_cache = false;       // kv / projected: the scout's cache goes on the wire
  bool selects = false;           // a selector other than full
  bool replan = false;            // kv / projected sent a layer at a time against a TTFT target
  bool layerwise = false;         // --layerwise: sent a layer at a time during the prefill
  double edge_prefill = 0;        // the scout's prefill (stats.stages.prefill adds the cloud's)
  bool adaptive = false;          // the policy was chosen by the controller
  ResolvedPolicy requested;       // adaptive: the policy as asked, before the choice
  control::OperatingPoint point;  // adaptive: the point chosen
  std::string session_id;
  net::Tenant tenant;  // the client's token's tenant (empty name: no authentication)
  net::TenantLedger::Hold tenant_hold;
  // Adaptive: the quality-table points whose answering model the tenant may use (null: all).
  std::function<bool(const control::OperatingPoint&)> tenant_allows;
  Uplink open;
  // Encoded up front (no re-planning), or as sent (re-planning) while another attempt
  // could re-send them; chunks[i] has seq i.
  // Their payloads are shared with the streams that send them, not copied.
  std::vector<net::SharedChunk> chunks;
  int replan_layer = 0, replan_rung = 0;  // re-planning: the next layer, the ladder rung
  // Recovery: whether the cloud opened the current session (so it may hold it), whether
  // the next attempt resumes it, what broke, and that stream's chunks sent and unacked.
  bool opened = false, resume = false;
  std::string failure;
  uint64_t sent_upto = 0, unacked_bytes = 0;
  // The cache that is sent (the prefill's, or its kept slots), kept alive through the
  // transfer because a re-planning request encodes it layer by layer as it sends.
  model::PrefillResult pre;
  std::unique_ptr<model::KvCache> kept;
  const model::KvCache* send_cache = nullptr;
  // The positions the selection keeps (empty: the whole cache), which are encoded and
  // estimated; --estimate_overlap: the probe (kept for choosing again after a
  // rejection), whether the stream just closed for a rejection, and the estimate running
  // beside the transfer with its model worker slot. Last, so it is joined before the
  // members it reads are destroyed.
  std::vector<int32_t> selected;
  // The selection by importance (select::Selection::ranked), for progressive plans.
  std::vector<int32_t> ranked;
  int always_kept = 0;
  // Progressive plans with a TTFT target: each chunk's tier, the cloud's predicted
  // time, and the tiers whose chunks were all sent.
  std::vector<int> chunk_tier;
  double cloud_seconds = 0;
  int tiers_sent = 0;
  std::unique_ptr<model::QualityProbe> probe;
  bool estimate_rejected = false;
  bool scout_unsure = false;  // the last estimate: a kv point, the scout's confidence too low
  std::optional<base::AdmissionGate::Slot> estimate_slot;
  // --layerwise: the model worker slot, held from admission until the prefill (which
  // runs inside the first transfer attempt) ends.
  std::optional<base::AdmissionGate::Slot> prefill_slot;
  std::future<absl::StatusOr<model::QualityEstimate>> estimate;
};

absl::StatusOr<OnTransferFailure> ParseOnTransferFailure(absl::string_view name) {
  if (name == "fail") return OnTransferFailure::kFail;
  if (name == "retry") return OnTransferFailure::kRetry;
  if (name == "text") return OnTransferFailure::kText;
  return absl::InvalidArgumentError(
      absl::StrCat("on_transfer_failure: expected fail, retry or text, found ", base::Quote(name)));
}

EdgeService::EdgeService(std::unique_ptr<model::Model> scout,
                         std::unique_ptr<model::Tokenizer> tokenizer, const EdgeOptions& options,
                         metrics::MetricsServer& metrics)
    : scout_(std::move(scout)),
      tokenizer_(std::move(tokenizer)),
      options_(options),
      metrics_(std::make_unique<Metrics>(metrics.registry())),
      gate_(std::make_unique<base::AdmissionGate>(
          base::AdmissionGate::Options{options.model_workers, options.max_queued},
          [m = metrics_.get()](int running, int queued) {
            m->workers_busy.Set(running);
            m->queued.Set(queued);
          })),
      peers_(std::make_unique<net::PeerLimiter>(options.max_streams_per_peer,
                                                "--max_streams_per_peer")),
      prefill_cost_(options.edge_prefill),
      prefill_stats_cost_(options.edge_prefill_stats),
      channel_(options.cloud_channel ? options.cloud_channel
                                     : net::MakeChannel(options.cloud_address)),
      cloud_(kvstream::v1::CloudService::NewStub(channel_)) {
  if (options_.replica_set != nullptr) options_.replica_set->ExportTo(metrics.registry());
}

EdgeService::~EdgeService() = default;

void EdgeService::Drain() { gate_->Close(); }

absl::StatusOr<base::AdmissionGate::Slot> EdgeService::Admit(grpc::ServerContext* context,
                                                             kvstream::v1::StageSeconds& stages) {
  ASSIGN_OR_RETURN(base::AdmissionGate::Slot slot, gate_->Acquire(context->deadline(), [context] {
    return CheckAlive(context, "a model worker was free");
  }));
  stages.set_edge_queue(slot.wait_seconds());
  metrics_->queue_wait.Observe(slot.wait_seconds());
  return slot;
}

absl::Status EdgeService::CheckProjection(const kvstream::v1::GetInfoResponse& info,
                                          const std::string& cloud_model) const {
  std::vector<std::string> offered;
  for (const kvstream::v1::ProjectionInfo& p : info.projections()) {
    if (p.source_fingerprint() == scout_->fingerprint() && p.target_model() == cloud_model)
      return absl::OkStatus();
    offered.push_back(absl::StrCat(p.source_fingerprint(), " -> ", p.target_model()));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("projected mode: the cloud serves no projection from this edge's scout (",
                   scout_->fingerprint(), ") into '", cloud_model, "' (it serves ",
                   offered.empty() ? "none" : absl::StrJoin(offered, ", "),
                   "); start kvstream-cloud with --projection=FILE from kvstream fit-projection"));
}

absl::StatusOr<kvstream::v1::GetInfoResponse> EdgeService::CloudInfo() {
  {
    std::lock_guard<std::mutex> lock(info_mu_);
    if (info_.has_value()) return *info_;
  }
  grpc::ClientContext ctx;
  net::AddBearer(ctx, options_.cloud_token);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  kvstream::v1::GetInfoResponse info;
  kvstream::v1::CloudService::Stub& stub =
      options_.replica_set != nullptr ? options_.replica_set->AnyStub() : *cloud_;
  const grpc::Status st = stub.GetInfo(&ctx, {}, &info);
  if (!st.ok()) {
    return absl::UnavailableError(absl::StrCat("cloud at ", options_.cloud_address,
                                               " did not answer GetInfo: ", st.error_message()));
  }
  std::lock_guard<std::mutex> lock(info_mu_);
  info_ = info;
  return info;
}

absl::Status EdgeService::Serve(grpc::ServerContext* context, const kvstream::v1::AskRequest& req,
                                grpc::ServerWriter<AskEvent>* writer, Request& r) {
  r.start = Clock::now();
  if (options_.auth != nullptr) {
    ASSIGN_OR_RETURN(r.tenant, options_.auth->Check(*context));
  }
  RETURN_IF_ERROR(Prepare(req, r));
  RETURN_IF_ERROR(CheckTenant(r));
  RETURN_IF_ERROR(CloudReady(context));
  RETURN_IF_ERROR(BuildPayload(context, r));
  RETURN_IF_ERROR(CheckAlive(context, "transfer"));
  return Transfer(context, writer, r);
}

absl::StatusOr<std::string> EdgeService::AnsweringModel(kvstream::v1::Mode mode,
                                                        const std::string& cloud_model) {
  if (mode != kvstream::v1::MODE_KV) return cloud_model;
  ASSIGN_OR_RETURN(const kvstream::v1::GetInfoResponse info, CloudInfo());
  for (const auto& m : info.models()) {
    if (m.fingerprint() == scout_->fingerprint()) return m.name();
  }
  return absl::FailedPreconditionError(absl::StrCat("kv mode needs the scout (fingerprint ",
                                                    scout_->fingerprint(),
                                                    ") on the cloud; it is not served there"));
}

absl::Status EdgeService::SetTenantPoints(Request& r) {
  if (r.tenant.models.empty()) return absl::OkStatus();
  // Looked up once: a cloud that cannot be asked is its own error, not a refusal.
  absl::StatusOr<std::string> kv = AnsweringModel(kvstream::v1::MODE_KV, r.policy.cloud_model);
  if (!kv.ok() && kv.status().code() != absl::StatusCode::kFailedPrecondition) return kv.status();
  const bool kv_allowed = kv.ok() && r.tenant.MayUse(*kv);
  const bool cloud_model_allowed = r.tenant.MayUse(r.policy.cloud_model);
  r.tenant_allows = [kv_allowed, cloud_model_allowed](const control::OperatingPoint& p) {
    return p.mode == kvstream::v1::MODE_KV ? kv_allowed : cloud_model_allowed;
  };
  const auto& table = options_.quality_table;
  if (std::any_of(table.begin(), table.end(), r.tenant_allows)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "tenant '", r.tenant.name, "' may use models ", absl::StrJoin(r.tenant.models, ", "),
      "; no point of the adaptive quality table is answered by one of them"));
}

absl::Status EdgeService::CheckTenant(Request& r) {
  if (r.tenant.name.empty()) return absl::OkStatus();
  if (!r.tenant.models.empty()) {
    ASSIGN_OR_RETURN(const std::string model, AnsweringModel(r.policy.mode, r.policy.cloud_model));
    if (!r.tenant.MayUse(model)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "tenant '", r.tenant.name, "' may use models ", absl::StrJoin(r.tenant.models, ", "),
          "; this ", pipeline::ModeName(r.policy.mode), " request is answered by '", model, "'"));
    }
  }
  // The scout's cache for the whole prompt, as prefill holds it (text mode, and scout
  // mode without a selection, run no prefill here).
  const model::ModelConfig& c = scout_->config();
  const bool prefills = r.sends_cache || (r.mode == kvstream::v1::MODE_SCOUT && r.selects);
  const uint64_t bytes = !prefills
                             ? 0
                             : static_cast<uint64_t>(r.prompt.tokens.size()) * c.num_layers * 2ull *
                                   c.num_kv_heads * c.head_dim * (scout_->is_bf16() ? 2 : 4);
  ASSIGN_OR_RETURN(r.tenant_hold, tenants_->Acquire(r.tenant, bytes));
  return absl::OkStatus();
}

absl::Status EdgeService::CloudReady(grpc::ServerContext* context) {
  // Known down: fail now. Idle or connecting: give it up to a second to settle.
  const auto until =
      std::min(context->deadline(), std::chrono::system_clock::now() + std::chrono::seconds(1));
  if (options_.replica_set != nullptr) {
    if (options_.replica_set->WaitForReady(until)) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("no cloud replica at ", options_.cloud_address,
                                               " is ready; the request was not started"));
  }
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  while (state == GRPC_CHANNEL_IDLE || state == GRPC_CHANNEL_CONNECTING) {
    if (!channel_->WaitForStateChange(state, until)) break;
    state = channel_->GetState(true);
  }
  if (state == GRPC_CHANNEL_READY) return absl::OkStatus();
  const char* name = state == GRPC_CHANNEL_TRANSIENT_FAILURE ? "failing to connect"
                     : state == GRPC_CHANNEL_SHUTDOWN        ? "shut down"
                                                             : "still connecting";
  return absl::UnavailableError(absl::StrCat("cloud at ", options_.cloud_address,
                                             " is not reachable (", name,
                                             "); the request was not started"));
}

absl::Status EdgeService::Prepare(const kvstream::v1::AskRequest& req, Request& r) {
  if (req.question().empty()) {
    return absl::InvalidArgumentError(
        "question is empty; expected the question to answer about the context");
  }
  for (const auto& [field, text] :
       {std::pair<const char*, const std::string*>{"context", &req.context()},
        {"question", &req.question()},
        {"system", &req.system()}}) {
    if (const size_t at = base::InvalidUtf8At(*text); at != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(field, " is not valid UTF-8: byte ", at,
                                                     " of ", text->size(),
                                                     " starts no valid sequence"));
    }
  }
  ASSIGN_OR_RETURN(r.policy,
                   ResolvePolicy(req.policy(), options_.defaults, scout_->config().num_layers));
  r.mode = r.policy.mode;
  kvstream::v1::StageSeconds& stages = *r.stats.mutable_stages();
  const auto t = Clock::now();
  model::ChatOptions chat{req.system().empty() ? options_.system_prompt : req.system()};
  ASSIGN_OR_RETURN(r.prompt,
                   model::BuildQaPrompt(*tokenizer_, req.context(), req.question(), chat));
  stages.set_tokenize(Seconds(t, Clock::now()));
  const int n = static_cast<int>(r.prompt.tokens.size());
  if (r.policy.mode == kvstream::v1::MODE_ADAPTIVE) {
    r.adaptive = true;
    r.requested = r.policy;
    RETURN_IF_ERROR(SetTenantPoints(r));
    if (options_.estimate_history) {
      for (const auto& [point, share] : estimate_history_.Tick()) {
        metrics_->rejection_share.Add({{"point", point}}).Set(share);
      }
    }
    ASSIGN_OR_RETURN(r.policy, ChooseAdaptive(r.requested, n, r.prompt.spans.context_tokens(),
                                              r.stats, r.tenant_allows, &r.point));
    r.mode = r.policy.mode;
  }
  r.stats.set_mode(r.policy.mode);
  r.stats.set_selector(std::string(select::PolicyName(r.policy.selector)));
  r.sends_cache = pipeline::SendsCache(r.policy.mode);
  r.selects = r.policy.selector != select::Policy::kFull;
  r.replan = r.policy.replan && r.sends_cache && r.policy.ttft_target_seconds > 0;
  // An adaptive request's estimate needs the whole prefill: it runs beside the rest of
  // the transfer (--estimate_overlap), or there is none.
  r.layerwise = options_.layerwise && r.sends_cache && !r.selects && !r.replan &&
                r.policy.plan.tiers == 0 && (!Estimates(r) || options_.estimate_overlap);
  if (r.sends_cache) r.stats.set_spec(r.policy.spec);
  r.head.assign(r.prompt.tokens.begin(), r.prompt.tokens.end() - 1);
  r.spans = r.prompt.spans;
  r.spans.num_tokens = static_cast<int>(r.head.size());
  r.stats.set_context_tokens(r.spans.context_tokens());
  r.stats.set_kept_tokens(r.spans.context_tokens());
  return CheckLengths(r);
}

absl::Status EdgeService::CheckLengths(Request& r) {
  const model::ModelConfig& sc = scout_->config();
  const ResolvedPolicy& policy = r.policy;
  const int64_t n = static_cast<int64_t>(r.prompt.tokens.size());
  // The answering model's dims, for the raw-bytes reference.
  int64_t layers = sc.num_layers, kv_heads = sc.num_kv_heads, head_dim = sc.head_dim;
  if (policy.mode != kvstream::v1::MODE_TEXT &&
      n + policy.max_tokens >= sc.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context and question take ", n, " tokens, plus max_tokens ", policy.max_tokens,
        "; the edge's scout model allows ", sc.max_position_embeddings, " positions"));
  }
  if (policy.mode != kvstream::v1::MODE_KV) {
    if (policy.cloud_model.empty()) {
      return absl::InvalidArgumentError(
          "policy.cloud_model is empty and the edge has no --cloud_model default; name the cloud "
          "model that answers");
    }
    ASSIGN_OR_RETURN(const kvstream::v1::GetInfoResponse info, CloudInfo());
    const kvstream::v1::ModelInfo* found = nullptr;
    std::vector<std::string> names;
    for (const auto& m : info.models()) {
      names.push_back(m.name());
      if (m.name() == policy.cloud_model) found = &m;
    }
    if (found == nullptr) {
      return absl::NotFoundError(absl::StrCat("policy.cloud_model '", policy.cloud_model,
                                              "' is not served by the cloud (it serves ",
                                              absl::StrJoin(names, ", "), ")"));
    }
    if (n + policy.max_tokens >= found->dims().max_position_embeddings()) {
      return absl::InvalidArgumentError(
          absl::StrCat("context and question take ", n, " tokens, plus max_tokens ",
                       policy.max_tokens, "; cloud model '", policy.cloud_model, "' allows ",
                       found->dims().max_position_embeddings(), " positions"));
    }
    layers = found->dims().num_layers();
    kv_heads = found->dims().num_kv_heads();
    head_dim = found->dims().head_dim();
    if (policy.mode == kvstream::v1::MODE_PROJECTED) {
      RETURN_IF_ERROR(CheckProjection(info, policy.cloud_model));
    }
  }
  r.stats.set_raw_kv_bytes(static_cast<uint64_t>(2 * layers * kv_heads * head_dim * 2) *
                           r.head.size());
  return absl::OkStatus();
}

pipeline::Request EdgeService::PipelineRequest(const Request& r) const {
  pipeline::Request request =
      ToPipelineRequest(r.policy, options_.chunk_bytes, options_.snapkv_window, r.layerwise);
  // A layer-wise request encodes beside its own prefill, which has the worker's cores.
  request.encode_threads = r.layerwise ? 1 : options_.encode_threads;
  request.answer_check = options_.answer_check;
  return request;
}

absl::Status EdgeService::BuildPayload(grpc::ServerContext* context, Request& r) {
  r.session_id = pipeline::NewSessionId();
  // Text, and scout without a selection: no model work here.
  if (!pipeline::SenderPrefills(PipelineRequest(r))) return EncodePayload(r);
  // The slot bounds the scout's forward passes; it is given back after encode, before the
  // transfer waits on the network.
  ASSIGN_OR_RETURN(base::AdmissionGate::Slot slot, Admit(context, *r.stats.mutable_stages()));
  RETURN_IF_ERROR(CheckAlive(context, "prefill"));
  if (r.layerwise) {  // the prefill runs in the transfer, sending each layer as it is done
    r.prefill_slot.emplace(std::move(slot));
    ASSIGN_OR_RETURN(
        *r.open.mutable_open(),
        pipeline::OpenBeforePrefill(*scout_, r.prompt, PipelineRequest(r), r.session_id));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const select::Selection sel, PrefillAndSelect(context, r));
  const bool estimates = Estimates(r);
  if (estimates && !(options_.estimate_overlap && !r.replan)) {
    RETURN_IF_ERROR(CheckEstimate(context, r, r.selects ? sel.kept : std::vector<int32_t>{}));
    if (r.mode == kvstream::v1::MODE_TEXT) return absl::OkStatus();  // the estimate chose text
  } else {
    r.selected = r.selects ? sel.kept : std::vector<int32_t>{};
  }
  RETURN_IF_ERROR(CheckAlive(context, "encode"));
  RETURN_IF_ERROR(EncodePayload(r));
  if (estimates && !r.replan && options_.estimate_overlap) {
    StartEstimate(r, std::move(slot), r.selected);
  }
  return absl::OkStatus();
}

absl::Status EdgeService::EncodePayload(Request& r) {
  const auto t = Clock::now();
  select::Selection sel;
  sel.kept = r.selected;
  sel.ranked = r.ranked;
  sel.always_kept = r.always_kept;
  const bool prefilled = r.pre.cache != nullptr;
  ASSIGN_OR_RETURN(pipeline::Payload p,
                   pipeline::Encode(*scout_, prefilled ? &r.pre : nullptr, &sel, r.prompt,
                                    PipelineRequest(r), r.session_id, !r.replan));
  *r.open.mutable_open() = std::move(p.open);
  r.chunks = net::ShareAll(std::move(p.chunks));
  r.chunk_tier.clear();
  r.kept = std::move(p.kept);
  r.send_cache = p.cache;
  if (!r.sends_cache) return absl::OkStatus();
  RETURN_IF_ERROR(PlanTiers(r));
  const double encode = Seconds(t, Clock::now());
  kvstream::v1::StageSeconds& stages = *r.stats.mutable_stages();
  stages.set_encode(stages.encode() + encode);
  return absl::OkStatus();
}

absl::StatusOr<select::Selection> EdgeService::PrefillAndSelect(grpc::ServerContext* context,
                                                                Request& r) {
  kvstream::v1::StageSeconds& stages = *r.stats.mutable_stages();
  auto t = Clock::now();
  auto interrupt = [context] { return CheckAlive(context, "the prefill finished"); };
  const pipeline::Request request = PipelineRequest(r);
  ASSIGN_OR_RETURN(r.pre, pipeline::Prefill(*scout_, r.prompt, request, interrupt));
  stages.set_prefill(Seconds(t, Clock::now()));
  r.edge_prefill = stages.prefill();
  ObservePrefill(r, stages.prefill());
  return SelectFromPrefill(r);
}

absl::StatusOr<select::Selection> EdgeService::SelectFromPrefill(Request& r) {
  const auto t = Clock::now();
  ASSIGN_OR_RETURN(select::Selection sel, pipeline::Select(r.pre, r.prompt, PipelineRequest(r)));
  r.ranked = sel.ranked;
  r.always_kept = sel.always_kept;
  r.stats.set_kept_tokens(sel.context_kept);
  kvstream::v1::StageSeconds& stages = *r.stats.mutable_stages();
  stages.set_select(stages.select() + Seconds(t, Clock::now()));
  return sel;
}

void EdgeService::ObservePrefill(const Request& r, double seconds) {
  std::lock_guard<std::mutex> lock(cost_mu_);
  control::PrefillCost& cost = r.selects ? prefill_stats_cost_ : prefill_cost_;
  cost.Observe(static_cast<int>(r.head.size()), seconds);
  metrics_->prefill_scale.Add({{"kind", r.selects ? "stats" : "plain"}}).Set(cost.scale());
}

absl::Status EdgeService::SendWhilePrefilling(grpc::ServerContext* context, CloudTransfer& transfer,
                                              Request& r, bool& sent_ok) {
  const pipeline::Request request = PipelineRequest(r);
  const bool keep = KeepsChunks();
  LayerSender sender(transfer);
  double encode = 0;
  uint64_t seq = 0;
  std::optional<Clock::time_point> first_sent;
  // On the prefill's thread, between layers: the stream carries on meanwhile. A broken
  // stream does not stop the prefill, so that another attempt has every chunk.
  auto on_layer = [&](int layer, const model::KvCache& cache) -> absl::Status {
    const auto t = Clock::now();
    ASSIGN_OR_RETURN(std::vector<kvstream::v1::KvChunk> encoded,
                     pipeline::EncodeLayer(cache, r.prompt, request, r.session_id, layer, seq));
    std::vector<net::SharedChunk> chunks = net::ShareAll(std::move(encoded));
    encode += Seconds(t, Clock::now());
    seq += chunks.size();
    if (keep) r.chunks.insert(r.chunks.end(), chunks.begin(), chunks.end());
    sender.Push(std::move(chunks));
    if (!first_sent) first_sent = Clock::now();
    return absl::OkStatus();
  };
  auto interrupt = [context] { return CheckAlive(context, "the prefill finished"); };
  const auto t = Clock::now();
  absl::StatusOr<model::PrefillResult> pre =
      pipeline::Prefill(*scout_, r.prompt, request, interrupt, on_layer);
  const auto done = Clock::now();
  const double prefill = Seconds(t, done) - encode;
  const absl::Status prefilled = pre.status();
  if (prefilled.ok()) {
    r.pre = *std::move(pre);
    r.send_cache = r.pre.cache.get();
  }
  // The slot goes to the adaptive estimate, which runs beside the rest of the transfer
  // (Commit waits for its verdict), or back to the next request.
  if (prefilled.ok() && Estimates(r)) {
    StartEstimate(r, *std::move(r.prefill_slot), {});
  }
  r.prefill_slot.reset();
  sent_ok = sender.Close() && sent_ok;
  RETURN_IF_ERROR(prefilled);
  kvstream::v1::StageSeconds& stages = *r.stats.mutable_stages();
  stages.set_prefill(prefill);
  stages.set_encode(stages.encode() + encode);
  stages.set_overlap(first_sent ? Seconds(*first_sent, done) : 0.0);
  r.edge_prefill = prefill;
  ObservePrefill(r, prefill);
  return absl::OkStatus();
}

void EdgeService::SendChunks(CloudTransfer& transfer, Request& r, uint64_t first, bool& sent_ok) {
  const bool keep = KeepsChunks();
  const int tiers = r.open.open().tier_slots_size();
  r.tiers_sent = tiers;
  for (size_t i = first; sent_ok && i < r.chunks.size(); ++i) {
    if (transfer.stopped()) {  // the cloud answers from the tiers it has, or failed
      r.tiers_sent = r.chunk_tier.empty() ? 0 : r.chunk_tier[i];
      break;
    }
    if (StopBeforeTier(transfer, r, i)) {
      r.tiers_sent = r.chunk_tier[i];
      logging::Logf(logging::Level::kDebug, "edge",
                    "session %s: sent %d of %d tiers to meet the %.3f s TTFT target", r.session_id,
                    r.tiers_sent, tiers, r.policy.ttft_target_seconds);
      break;
    }
    sent_ok = transfer.SendChunk(keep ? r.chunks[i] : std::move(r.chunks[i]));
  }
}

bool EdgeService::StopBeforeTier(CloudTransfer& transfer, const Request& r, size_t i) {
  if (r.chunk_tier.empty() || i == 0 || r.chunk_tier[i] == r.chunk_tier[i - 1]) return false;
  uint64_t tier_bytes = 0;
  for (size_t j = i; j < r.chunks.size() && r.chunk_tier[j] == r.chunk_tier[i]; ++j) {
    tier_bytes += r.chunks[j].ByteSize();
  }
  const control::LinkState link = Link();
  const double bandwidth = transfer.AckedBandwidth(link.bandwidth_bps);
  const double left = r.policy.ttft_target_seconds - Seconds(r.start, Clock::now()) -
                      r.cloud_seconds - link.rtt_seconds / 2;
  const double needed =
      8.0 * static_cast<double>(transfer.UnackedBytes() + tier_bytes) / std::max(bandwidth, 1.0);
  return needed > left;
}

absl::Status EdgeService::PlanTiers(Request& r) {
  r.chunk_tier.clear();
  r.cloud_seconds = 0;
  const auto& tiers = r.open.open().tier_slots();
  if (tiers.empty() || !(r.policy.ttft_target_seconds > 0)) return absl::OkStatus();
  std::vector<uint32_t> ends;
  for (uint32_t n : tiers) ends.push_back((ends.empty() ? 0 : ends.back()) + n);
  for (const net::SharedChunk& c : r.chunks) {
    const auto tier =
        std::upper_bound(ends.begin(), ends.end(), c.header.token_begin()) - ends.begin();
    r.chunk_tier.push_back(static_cast<int>(tier));
  }
  // The prediction only tunes when to stop: without the cloud's rates, none is assumed.
  const absl::StatusOr<double> cloud = PredictCloudSeconds(r);
  if (!cloud.ok()) {
    logging::Logf(logging::Level::kWarning, "edge",
                  "session %s: no cloud time prediction for progressive sending (%s); assuming 0",
                  r.session_id, cloud.status().message());
  }
  r.cloud_seconds = cloud.ok() ? *cloud : 0;
  // Should an outage hold back the rest (Commit too), the cloud answers from what it
  // has when the answer would otherwise miss the target: after the time left less the
  // cloud's and a round trip.
  const double left = r.policy.ttft_target_seconds - Seconds(r.start, Clock::now()) -
                      r.cloud_seconds - Link().rtt_seconds;
  r.open.mutable_open()->set_answer_after_seconds(std::max(left, 1e-3));
  return absl::OkStatus();
}

absl::StatusOr<double> EdgeService::PredictCloudSeconds(const Request& r) {
  control::Rates rates;
  RETURN_IF_ERROR(CloudRates(r.policy, rates).status());
  control::OperatingPoint point;
  point.mode = r.policy.mode;
  point.selector = r.policy.selector;
  point.retention = r.policy.retention;
  point.spec = r.policy.spec;
  const model::ModelConfig& c = scout_->config();
  const control::LinkState link{options_.initial_bandwidth_bps, 0};
  ASSIGN_OR_RETURN(
      const control::Prediction p,
      control::Predict(point, {static_cast<int>(r.prompt.tokens.size()), r.spans.context_tokens()},
                       {c.num_layers, c.num_kv_heads, c.head_dim}, rates, link));
  return p.cloud_seconds;
}

absl::Status EdgeService::Transfer(grpc::ServerContext* context,
                                   grpc::ServerWriter<AskEvent>* writer, Request& r) {
  for (int attempt = 1, failures = 0, refusals = 0;; ++attempt) {
    CloudTransfer::Result result;
    r.stats.set_transfer_attempts(static_cast<uint32_t>(attempt));
    absl::Status st = TransferOnce(context, writer, r, result);
    if (result.opened >= 0 && r.sends_cache) r.opened = true;
    if (r.resume && result.opened >= 0) NoteResumed(result, r);
    if (st.ok()) {
      UpdateLink(result);
      RecordTransfer(result, r);
      break;
    }
    r.stats.set_wire_bytes(r.stats.wire_bytes() + result.wire_bytes);  // what was sent counts
    if (r.estimate_rejected) {  // choose again and send the new choice on a new stream
      RETURN_IF_ERROR(ReplanRejected(context, r));
      continue;
    }
    // A replica at its session or cache limit refused the SessionOpen: round robin
    // offers it to the next replica.
    if (st.code() == absl::StatusCode::kResourceExhausted && result.opened < 0 && !r.resume &&
        ++refusals < 2 * options_.cloud_replicas) {
      r.stats.set_recovery(absl::StrCat(r.stats.recovery(), r.stats.recovery().empty() ? "" : "; ",
                                        "a replica was full (", base::Bounded(st.message(), 200),
                                        "), tried another"));
      continue;
    }
    if (r.resume && result.opened < 0 && st.code() == absl::StatusCode::kNotFound) {
      // The cloud no longer holds the session (restarted, another replica, window over).
      RETURN_IF_ERROR(StartAfresh(
          r, absl::StrCat(r.failure, " (resume refused: ", absl::StatusCodeToString(st.code()),
                          ": ", base::Bounded(st.message(), 200), ")")));
      continue;
    }
    // Only a broken stream (the cloud died, restarted, drained, or the connection
    // dropped) before any answer token reached the client can be tried again.
    const bool broken =
        st.code() == absl::StatusCode::kUnavailable && !result.have_token && !result.client_gone;
    if (!broken || options_.on_transfer_failure == OnTransferFailure::kFail ||
        ++failures > options_.transfer_retries) {
      return st;
    }
    RETURN_IF_ERROR(PrepareRetry(context, st, failures, result, r));
  }
  AskEvent last;
  *last.mutable_stats() = r.stats;
  if (!writer->Write(last)) return absl::CancelledError("client went away before the stats");
  return absl::OkStatus();
}

bool EdgeService::Estimates(const Request& r) const {
  return r.adaptive && r.sends_cache && options_.estimate_steps > 0;
}

int EdgeService::EstimateSteps(const std::vector<int32_t>& kept) const {
  return EstimateStepsFor(!kept.empty(), options_.estimate_steps,
                          options_.estimate_selection_steps);
}

int EdgeService::ProbeSteps() const {
  // The most any plan takes: a selection's.
  return EstimateStepsFor(/*selects=*/true, options_.estimate_steps,
                          options_.estimate_selection_steps);
}

bool EdgeService::KeepsChunks() const {
  return options_.on_transfer_failure != OnTransferFailure::kFail && options_.transfer_retries > 0;
}

absl::Status EdgeService::TransferOnce(grpc::ServerContext* context,
                                       grpc::ServerWriter<AskEvent>* writer, Request& r,
                                       CloudTransfer::Result& result) {
  // Cancellation and deadline of the client's call propagate to the cloud's; the
  // transfer joins its reader on every way out.
  std::shared_ptr<grpc::ChannelInterface> channel = channel_;
  std::optional<ReplicaSet::Picked> replica;  // counted against its replica until the end
  if (options_.replica_set != nullptr) {
    replica.emplace(options_.replica_set->Pick());
    if (!*replica) {
      return absl::UnavailableError(
          "no cloud replica is ready (down, or failing its health check)");
    }
    channel = (*replica)->channel;
  }
  auto relay = [writer](const kvstream::v1::Token& token) {
    AskEvent ev;
    *ev.mutable_token() = token;
    return writer->Write(ev);
  };
  CloudTransfer transfer(channel, grpc::ClientContext::FromServerContext(*context), relay,
                         options_.shaper.get(), options_.cloud_token, options_.zero_copy_uplink);
  Uplink open = r.open;
  if (r.resume) open.mutable_open()->set_resume(true);
  bool sent_ok = transfer.SendOpen(open);
  uint64_t first = 0;        // a resumed session continues where the cloud stopped applying
  absl::Status send_status;  // an encoding error while sending, or a bad resume
  if (sent_ok && r.resume) {
    const std::optional<uint64_t> next = transfer.WaitOpened();
    sent_ok = next.has_value();
    if (sent_ok && *next > r.chunks.size()) {
      send_status = absl::InternalError(
          absl::StrCat("resume of session ", r.session_id, ": the cloud holds ", *next,
                       " chunks, more than the ", r.chunks.size(), " this edge encoded"));
    }
    if (sent_ok) first = std::min<uint64_t>(*next, r.chunks.size());
  }
  if (r.layerwise && r.pre.cache == nullptr) {  // the first attempt: the prefill is to run
    if (sent_ok) send_status = SendWhilePrefilling(context, transfer, r, sent_ok);
  } else {
    SendChunks(transfer, r, first, sent_ok);
  }
  if (r.replan && sent_ok && send_status.ok()) send_status = SendReplanned(transfer, r, sent_ok);
  if (sent_ok && send_status.ok() && r.sends_cache && r.estimate.valid()) {
    // The cloud holds the whole plan; Commit waits for the estimate's verdict. A rejected
    // plan's stream is closed without Commit, which the cloud answers by dropping the
    // session (INVALID_ARGUMENT, never parked for a resume).
    const absl::StatusOr<bool> accepted = AwaitEstimate(r);
    if (!accepted.ok()) send_status = accepted.status();
    if (accepted.ok() && !*accepted) {
      r.estimate_rejected = true;
      sent_ok = false;
    }
  }
  if (!send_status.ok()) {
    sent_ok = false;
    transfer.Cancel();
  }
  if (sent_ok && !transfer.stopped()) {
    transfer.SendCommit(pipeline::MakeAnswerCheck(r.pre, r.prompt, PipelineRequest(r)));
  }
  result = transfer.Finish();
  RETURN_IF_ERROR(send_status);
  if (r.estimate_rejected) return absl::AbortedError("the quality estimate rejected the plan");
  if (result.client_gone) {
    return absl::CancelledError("client went away while answer tokens were relayed");
  }
  return StreamStatus(context, result, r);
}

absl::Status EdgeService::StreamStatus(grpc::ServerContext* context,
                                       const CloudTransfer::Result& result, const Request& r) {
  // A progressive session answered without Commit may be cancelled after its Done, when
  // the rest of the uplink is held back longer than the cloud waits for it.
  const bool answered = result.have_done && r.open.open().answer_after_seconds() > 0;
  if (!result.status.ok() && !answered) {
    if (result.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
        result.status.error_code() == grpc::StatusCode::CANCELLED) {
      RETURN_IF_ERROR(CheckAlive(context, "the answer completed"));
    }
    if (result.status.error_code() == grpc::StatusCode::CANCELLED) {
      // Neither the client nor this edge cancelled: the cloud ended the call (a server
      // shutting down cancels calls it had not started), a broken stream like any other.
      return absl::UnavailableError(
          absl::StrCat("cloud cancelled the stream: ", result.status.error_message()));
    }
    return net::FromGrpc(result.status, "cloud: ");
  }
  if (!result.have_done) return absl::InternalError("cloud closed the stream without Done");
  return absl::OkStatus();
}

void EdgeService::NoteResumed(const CloudTransfer::Result& t, Request& r) {
  // Chunks first..sent_upto had gone out on the broken stream: this one sent them again.
  const uint64_t again = r.sent_upto > t.first_seq ? r.sent_upto - t.first_seq : 0;
  uint64_t resent = 0;
  for (uint64_t i = 0; i < again && i < t.chunk_bytes.size(); ++i) resent += t.chunk_bytes[i];
  r.stats.set_resent_bytes(r.stats.resent_bytes() + resent);
  r.stats.set_unacked_bytes(r.stats.unacked_bytes() + r.unacked_bytes);
  r.unacked_bytes = 0;
  r.stats.set_recovery(absl::StrCat(r.stats.recovery(), r.stats.recovery().empty() ? "" : "; ",
                                    "resumed after ", r.failure, ": the cloud held ", t.first_seq,
                                    " of ", r.sent_upto, " chunks sent, ", again, " sent again (",
                                    resent, " of ", r.unacked_bytes, " unacked bytes)"));
  logging::Logf(logging::Level::kInfo, "edge", "session %s resumed at chunk %llu of %llu sent",
                r.session_id, static_cast<unsigned long long>(t.first_seq),
                static_cast<unsigned long long>(r.sent_upto));
  r.resume = false;
}

absl::Status EdgeService::PrepareRetry(grpc::ServerContext* context, const absl::Status& failure,
                                       int attempt, const CloudTransfer::Result& broken,
                                       Request& r) {
  // 100-300 ms, doubling per attempt, never past the client's deadline.
  thread_local std::mt19937 rng(std::random_device{}());
  const double backoff =
      std::uniform_real_distribution<double>(0.1, 0.3)(rng) * (1 << (attempt - 1));
  const auto until = std::chrono::system_clock::now() +
                     std::chrono::microseconds(static_cast<int64_t>(backoff * 1e6));
  if (until >= context->deadline()) return failure;
  std::this_thread::sleep_until(until);
  RETURN_IF_ERROR(CheckAlive(context, "another transfer attempt"));
  const std::string what = absl::StrCat(absl::StatusCodeToString(failure.code()), ": ",
                                        base::Bounded(failure.message(), 200));
  // A stream that broke before its Opened sent nothing new: keep what the last one sent.
  if (broken.opened >= 0) {
    r.sent_upto = broken.first_seq + broken.chunks;
    for (size_t i = 0; i < broken.chunk_bytes.size(); ++i) {
      if (broken.acked[i] < 0) r.unacked_bytes += broken.chunk_bytes[i];
    }
  }
  // A session the cloud opened may still be held there: reattach and send only the
  // chunks it has not applied.
  if (r.sends_cache && r.opened) {
    r.resume = true;
    r.failure = what;
    logging::Logf(logging::Level::kWarning, "edge", "transfer attempt %d failed (%s); resuming",
                  attempt, what);
    return absl::OkStatus();
  }
  return StartAfresh(r, what);
}

absl::Status EdgeService::StartAfresh(Request& r, const std::string& what) {
  const bool to_text =
      options_.on_transfer_failure == OnTransferFailure::kText && r.mode != kvstream::v1::MODE_TEXT;
  if (to_text && r.policy.cloud_model.empty()) {
    return absl::UnavailableError(
        absl::StrCat(what, " (no text fallback: the request names no cloud model)"));
  }
  if (to_text && !r.tenant.MayUse(r.policy.cloud_model)) {
    return absl::UnavailableError(absl::StrCat(what, " (no text fallback: tenant '", r.tenant.name,
                                               "' may not use model '", r.policy.cloud_model,
                                               "')"));
  }
  r.stats.set_recovery(absl::StrCat(r.stats.recovery(), r.stats.recovery().empty() ? "" : "; ",
                                    to_text ? "fell back to text after " : "retried after ", what));
  logging::Logf(logging::Level::kWarning, "edge", "transfer of session %s failed (%s); %s",
                r.session_id, what, to_text ? "falling back to text" : "sending it again");
  r.resume = r.opened = false;
  r.session_id = pipeline::NewSessionId();
  kvstream::v1::SessionOpen& open = *r.open.mutable_open();
  open.set_session_id(r.session_id);
  if (r.replan) {  // re-planning encodes again from the first layer
    r.chunks.clear();
    r.replan_layer = r.replan_rung = 0;
  }
  for (net::SharedChunk& c : r.chunks) c.header.set_session_id(r.session_id);
  return to_text ? SwitchToText(r) : absl::OkStatus();
}

absl::Status EdgeService::SendReplanned(CloudTransfer& transfer, Request& r, bool& sent_ok) {
  // Encode and send a layer at a time; before each, measure this request's throughput
  // from the acks so far and move the remaining layers down the ladder when they would
  // not make the target.
  const ResolvedPolicy& policy = r.policy;
  const model::ModelConfig& c = scout_->config();
  std::vector<std::string> ladder = {policy.spec};
  for (const char* cheaper : {"int8", "int4", "int2"}) {
    auto plan = codec::ParsePlan(cheaper);
    const codec::TensorShape one{1, 1, c.head_dim};
    auto bytes = [&](const codec::LayerSpec& ls) {
      return codec::EncodedTensorBytes(ls.k, one, codec::DType::kF32) +
             codec::EncodedTensorBytes(ls.v, one, codec::DType::kF32);
    };
    auto last = codec::ParsePlan(ladder.back());
    if (plan.ok() && last.ok() && bytes(plan->base) < bytes(last->base)) ladder.push_back(cheaper);
  }
  int& rung = r.replan_rung;
  std::string replanned;
  double encode_seconds = 0;
  absl::Status status;
  const bool keep = KeepsChunks();
  for (int& l = r.replan_layer; sent_ok && status.ok() && l < c.num_layers; ++l) {
    const double bw = transfer.AckedBandwidth(policy.planned_bandwidth_bps);
    const double left = policy.ttft_target_seconds - Seconds(r.start, Clock::now()) -
                        policy.predicted_cloud_seconds;
    const absl::StatusOr<int> next =
        control::ReplanRung(ladder, rung, c.num_layers - l, r.send_cache->size(),
                            {c.num_layers, c.num_kv_heads, c.head_dim}, bw, std::max(0.0, left));
    if (!next.ok()) {
      status = next.status();
      break;
    }
    if (*next != rung) {
      absl::StrAppendFormat(&replanned, "%slayers %d+ -> %s at %.1f Mbit/s",
                            replanned.empty() ? "" : ", ", l, ladder[*next], bw / 1e6);
      rung = *next;
    }
    const auto te = Clock::now();
    absl::StatusOr<codec::Plan> plan =
        rung == 0 ? absl::StatusOr<codec::Plan>(policy.plan) : codec::ParsePlan(ladder[rung]);
    model::ChunkingOptions co;
    co.max_chunk_bytes = options_.chunk_bytes;
    co.layer_begin = l;
    co.layer_end = l + 1;
    absl::StatusOr<std::vector<kvstream::v1::KvChunk>> layer =
        plan.ok() ? model::EncodeCache(*r.send_cache, *plan, r.session_id, co, transfer.next_seq())
                  : absl::StatusOr<std::vector<kvstream::v1::KvChunk>>(plan.status());
    encode_seconds += Seconds(te, Clock::now());
    if (!layer.ok()) {
      status = layer.status();
      break;
    }
    std::vector<net::SharedChunk> chunks = net::ShareAll(*std::move(layer));
    // Kept first, so a resume can re-send this layer's unsent chunks too.
    if (keep) r.chunks.insert(r.chunks.end(), chunks.begin(), chunks.end());
    for (auto& ch : chunks) {
      if (!(sent_ok = transfer.SendChunk(std::move(ch)))) break;
    }
  }
  kvstream::v1::StageSeconds& stages = *r.stats.mutable_stages();
  stages.set_encode(stages.encode() + encode_seconds);
  if (!replanned.empty()) {
    r.stats.set_decision(absl::StrCat(r.stats.decision(), "; re-planned: ", replanned));
  }
  return status;
}

void EdgeService::RecordTransfer(const CloudTransfer::Result& t, Request& r) {
  kvstream::v1::RequestStats& stats = r.stats;
  kvstream::v1::StageSeconds& stages = *stats.mutable_stages();
  stages.set_transfer(
      Seconds(t.start, t.chunks == 0 ? t.writes_done : std::max(t.last_ack, t.start)));
  const kvstream::v1::CloudStats& cloud = t.cloud;
  stages.set_cloud_queue(cloud.queue_seconds());
  stages.set_rebuild(cloud.rebuild_seconds());
  stages.set_project(cloud.projection_seconds());
  stages.set_first_token(cloud.first_token_seconds());
  stages.set_decode(cloud.decode_seconds());
  if (cloud.prefill_seconds() > 0) {
    stages.set_prefill(stages.prefill() + cloud.prefill_seconds());
    ObserveCloudPrefill(r.policy.cloud_model, static_cast<int>(r.head.size()),
                        cloud.prefill_seconds());
  }
  stats.set_wire_bytes(stats.wire_bytes() + t.wire_bytes);  // with any broken attempts'
  stats.set_compression_ratio(
      stats.wire_bytes() > 0 ? static_cast<double>(stats.raw_kv_bytes()) / stats.wire_bytes() : 0);
  stats.set_ttft_seconds(t.have_token ? Seconds(r.start, t.first_token)
                                      : Seconds(r.start, Clock::now()));
  stats.set_tokens_generated(t.tokens);
  stats.set_stop_reason(cloud.stop_reason());
  if (r.open.open().tier_slots_size() > 0) {
    stats.set_slots_used(cloud.slots_used());
    stats.set_tiers_sent(static_cast<uint32_t>(r.tiers_sent));
  }
  if (cloud.checked()) {
    stats.set_answer_check(cloud.answered_from_prompt() ? "answered from the prompt" : "passed");
  }
}

absl::Status EdgeService::SwitchToText(Request& r) {
  r.mode = r.policy.mode = kvstream::v1::MODE_TEXT;
  r.sends_cache = r.replan = r.layerwise = false;
  r.stats.set_mode(kvstream::v1::MODE_TEXT);
  r.stats.clear_spec();
  return EncodePayload(r);
}

absl::StatusOr<std::unique_ptr<model::QualityProbe>> NewProbe(model::Model& scout,
                                                              const model::Tokenizer& tokenizer,
                                                              const model::PrefillResult& pre,
                                                              int32_t last_token, int steps) {
  return model::QualityProbe::Create(scout, *pre.cache, last_token, steps,
                                     pipeline::StopTokens(scout, &tokenizer), &pre.last_logits);
}

std::function<bool(const control::OperatingPoint&)> EdgeService::InsteadOfScout(
    const Request& r) const {
  const control::OperatingPoint was = r.point;
  return [&r, was](const control::OperatingPoint& p) {
    if (r.tenant_allows && !r.tenant_allows(p)) return false;
    return p.mode == kvstream::v1::MODE_TEXT ||
           (p.mode == kvstream::v1::MODE_PROJECTED && p.selector == was.selector &&
            p.retention == was.retention);
  };
}

bool EdgeService::CloudModelAllowed(const Request& r) {
  control::Rates rates;
  const auto points = ServablePoints(r.requested, InsteadOfScout(r), rates);
  return points.ok() && !points->empty();
}

bool EdgeService::RecordEstimate(Request& r, const model::QualityEstimate& e) {
  // A kv answer is the scout's own: a scout unsure of its first token is likely wrong
  // however faithfully its cache is sent (unless the tenant may use no other model).
  r.scout_unsure = r.point.mode == kvstream::v1::MODE_KV &&
                   e.confidence < options_.kv_min_confidence && CloudModelAllowed(r);
  const bool accepted = e.agreement >= options_.estimate_min_agreement &&
                        (options_.estimate_max_kl <= 0 || e.kl <= options_.estimate_max_kl) &&
                        !r.scout_unsure;
  kvstream::v1::PlanEstimate& pe = *r.stats.add_estimates();
  pe.set_point(r.point.label());
  pe.set_kl(e.kl);
  pe.set_agreement(e.agreement);
  pe.set_p_top(e.p_top);
  pe.set_steps(static_cast<uint32_t>(e.steps));
  pe.set_confidence(e.confidence);
  pe.set_kept_tokens(r.stats.kept_tokens());
  pe.set_accepted(accepted);
  if (options_.estimate_history) {
    estimate_history_.Observe(pe.point(), !accepted);
    metrics_->rejection_share.Add({{"point", pe.point()}})
        .Set(estimate_history_.RejectionShare(pe.point()));
  }
  return accepted;
}

std::function<bool(const control::OperatingPoint&)> EdgeService::AfterRejection(
    const Request& r, const std::vector<std::string>& rejected) const {
  // The same selection under the table's other specs; a selection of the same kind that
  // keeps more, or the whole cache (what a selection dropped may be what the answer
  // needs); or a lossless fallback: text, or kv's whole cache unquantized (for a tenant
  // that may not use the text model). A scout unsure of its answer: text, or the same
  // selection projected into the cloud model, never the scout's own answer.
  const control::OperatingPoint was = r.point;
  auto instead_of_scout = r.scout_unsure ? InsteadOfScout(r) : nullptr;
  return [&r, was, rejected, instead_of_scout](const control::OperatingPoint& p) {
    if (std::find(rejected.begin(), rejected.end(), p.label()) != rejected.end()) return false;
    if (instead_of_scout) return instead_of_scout(p);
    if (r.tenant_allows && !r.tenant_allows(p)) return false;
    const bool same_selection = p.selector == was.selector && p.retention == was.retention;
    const bool keeps_more = was.selector != select::Policy::kFull &&
                            (p.selector == select::Policy::kFull ||
                             (p.selector == was.selector && p.retention > was.retention));
    const bool whole_kv = was.mode == kvstream::v1::MODE_KV && p.mode == kvstream::v1::MODE_KV &&
                          p.selector == select::Policy::kFull && p.spec == "raw";
    return p.mode == kvstream::v1::MODE_TEXT || whole_kv ||
           (p.mode == was.mode && (same_selection || keeps_more));
  };
}

absl::Status EdgeService::ChooseAfterRejection(Request& r, const std::vector<std::string>& rejected,
                                               std::vector<int32_t>& kept) {
  const control::OperatingPoint was = r.point;
  ASSIGN_OR_RETURN(r.policy, ChooseAdaptive(r.requested, static_cast<int>(r.prompt.tokens.size()),
                                            r.prompt.spans.context_tokens(), r.stats,
                                            AfterRejection(r, rejected), &r.point));
  r.stats.set_decision(
      absl::StrCat(r.stats.decision(), "; the estimate rejected ", absl::StrJoin(rejected, ", ")));
  if (r.policy.mode == kvstream::v1::MODE_TEXT) return SwitchToText(r);
  if (r.mode != r.policy.mode) {  // kv -> projected when the scout was unsure
    r.mode = r.policy.mode;
    r.stats.set_mode(r.mode);
    RETURN_IF_ERROR(CheckLengths(r));  // the cloud model's positions and raw bytes
  }
  r.stats.set_spec(r.policy.spec);
  if (r.point.selector == was.selector && r.point.retention == was.retention) {
    return absl::OkStatus();
  }
  r.stats.set_selector(std::string(select::PolicyName(r.policy.selector)));
  // The same selector keeping more, or the whole cache: selected again from the
  // prefill's statistics, which the request still holds.
  r.selects = r.point.selector != select::Policy::kFull;
  ASSIGN_OR_RETURN(const select::Selection sel, SelectFromPrefill(r));
  kept = r.selects ? sel.kept : std::vector<int32_t>{};
  return absl::OkStatus();
}

absl::Status EdgeService::CheckEstimate(grpc::ServerContext* context, Request& r,
                                        const std::vector<int32_t>& kept,
                                        std::vector<std::string> rejected,
                                        std::unique_ptr<model::QualityProbe> probe) {
  const auto t = Clock::now();
  if (probe == nullptr) {
    ASSIGN_OR_RETURN(probe,
                     NewProbe(*scout_, *tokenizer_, r.pre, r.prompt.tokens.back(), ProbeSteps()));
  }
  std::vector<int32_t> estimate_kept = kept;
  for (bool choose = !rejected.empty();; choose = true) {
    if (choose) {
      RETURN_IF_ERROR(ChooseAfterRejection(r, rejected, estimate_kept));
      if (r.mode == kvstream::v1::MODE_TEXT) break;
    }
    RETURN_IF_ERROR(CheckAlive(context, "the quality estimate"));
    ASSIGN_OR_RETURN(const model::QualityEstimate e,
                     probe->Estimate(estimate_kept, r.policy.plan, EstimateSteps(estimate_kept)));
    if (RecordEstimate(r, e)) break;
    rejected.push_back(r.point.label());
  }
  r.selected = estimate_kept;
  const double estimate = Seconds(t, Clock::now());
  r.stats.mutable_stages()->set_estimate(r.stats.stages().estimate() + estimate);
  return absl::OkStatus();
}

void EdgeService::StartEstimate(Request& r, base::AdmissionGate::Slot slot,
                                std::vector<int32_t> kept) {
  r.estimate_slot.emplace(std::move(slot));
  r.estimate = std::async(
      std::launch::async,
      [this, &r, kept = std::move(kept)]() -> absl::StatusOr<model::QualityEstimate> {
        const auto t = Clock::now();
        ASSIGN_OR_RETURN(
            r.probe, NewProbe(*scout_, *tokenizer_, r.pre, r.prompt.tokens.back(), ProbeSteps()));
        ASSIGN_OR_RETURN(model::QualityEstimate e,
                         r.probe->Estimate(kept, r.policy.plan, EstimateSteps(kept)));
        e.seconds = Seconds(t, Clock::now());
        return e;
      });
}

absl::StatusOr<bool> EdgeService::AwaitEstimate(Request& r) {
  absl::StatusOr<model::QualityEstimate> e = r.estimate.get();
  r.estimate_slot.reset();
  if (!e.ok()) return e.status();
  r.stats.mutable_stages()->set_estimate(e->seconds);
  return RecordEstimate(r, *e);
}

absl::Status EdgeService::ReplanRejected(grpc::ServerContext* context, Request& r) {
  r.estimate_rejected = false;
  const std::string label = r.point.label();
  // The new choice is estimated before it is sent, and runs on a model worker.
  ASSIGN_OR_RETURN(base::AdmissionGate::Slot slot, Admit(context, *r.stats.mutable_stages()));
  RETURN_IF_ERROR(CheckEstimate(context, r, r.selected, {label}, std::move(r.probe)));
  r.resume = r.opened = false;
  r.session_id = pipeline::NewSessionId();
  r.open.mutable_open()->set_session_id(r.session_id);
  if (r.mode == kvstream::v1::MODE_TEXT) return absl::OkStatus();
  return EncodePayload(r);
}

control::PrefillCost EdgeService::CloudPrefillCost(const kvstream::v1::ModelInfo& m) {
  std::lock_guard<std::mutex> lock(cost_mu_);
  auto it = cloud_prefill_cost_.find(m.name());
  if (it != cloud_prefill_cost_.end()) return it->second;
  control::PrefillCost cost = control::PrefillCost::FromRate(m.prefill_tokens_per_second());
  const auto& t = m.prefill_timings();
  if (t.size() >= 2) {
    auto fit = control::PrefillCost::Fit(static_cast<int>(t[0].tokens()), t[0].seconds(),
                                         static_cast<int>(t[t.size() - 1].tokens()),
                                         t[t.size() - 1].seconds());
    if (fit.ok()) cost = *fit;
  }
  if (cost.known()) cloud_prefill_cost_[m.name()] = cost;
  return cost;
}

void EdgeService::ObserveCloudPrefill(const std::string& model, int tokens, double seconds) {
  std::lock_guard<std::mutex> lock(cost_mu_);
  auto it = cloud_prefill_cost_.find(model);
  if (it == cloud_prefill_cost_.end() || tokens <= 0) return;  // not priced yet
  it->second.Observe(tokens, seconds);
  metrics_->prefill_scale.Add({{"kind", "cloud:" + model}}).Set(it->second.scale());
}

control::LinkState EdgeService::Link() {
  std::lock_guard<std::mutex> lock(link_mu_);
  control::LinkState link;
  link.bandwidth_bps =
      link_.has_bandwidth() ? link_.bandwidth_bps() : options_.initial_bandwidth_bps;
  link.rtt_seconds = link_.rtt_seconds() > 0 ? link_.rtt_seconds() : options_.initial_rtt_seconds;
  return link;
}

void EdgeService::UpdateLink(const CloudTransfer::Result& t) {
  const std::vector<uint64_t>& bytes = t.chunk_bytes;
  const std::vector<double>& sent = t.sent;
  const std::vector<double>& acked = t.acked;
  std::lock_guard<std::mutex> lock(link_mu_);
  // SessionOpen -> Opened is a round trip with no payload. A cloud that sends no Opened
  // leaves the round trip to be inferred from the first chunk's ack, which also holds
  // its transmission: with one small chunk per request that inference fed on itself (an
  // underestimated bandwidth left a small round trip, which left a low bandwidth).
  // (Not on a resume: the cloud may have waited for the broken stream to let go.)
  if (t.opened >= 0 && t.open_sent >= 0 && !t.resumed) {
    link_.AddRttSample(t.opened - t.open_sent);
  }
  // The first chunk's ack delay holds one round trip; later chunks are paced by the link
  // (ack-to-ack gaps).
  if (!bytes.empty() && sent[0] >= 0 && acked[0] >= 0) {
    const double bw = link_.has_bandwidth() ? link_.bandwidth_bps() : 0;
    if (t.opened < 0 && bw > 0) {
      link_.AddRttSample(std::max(0.0, acked[0] - sent[0] - 8.0 * bytes[0] / bw));
    }
    link_.AddThroughputSample(bytes[0], acked[0] - sent[0] - link_.rtt_seconds());  // <= 0: none
  }
  control::AddAckGapSamples(link_, bytes, sent, acked);
  if (link_.has_bandwidth()) metrics_->bandwidth.Set(link_.bandwidth_bps() / 8);
  metrics_->rtt.Set(link_.rtt_seconds());
}

absl::StatusOr<kvstream::v1::GetInfoResponse> EdgeService::CloudRates(const ResolvedPolicy& request,
                                                                      control::Rates& rates) {
  ASSIGN_OR_RETURN(kvstream::v1::GetInfoResponse info, CloudInfo());
  {
    std::lock_guard<std::mutex> lock(cost_mu_);
    rates.edge_prefill = prefill_cost_;
    rates.edge_prefill_stats = prefill_stats_cost_;
  }
  for (const auto& m : info.models()) {
    if (m.fingerprint() == scout_->fingerprint()) rates.kv_decode = m.decode_tokens_per_second();
    if (m.name() == request.cloud_model) {
      rates.cloud_prefill = CloudPrefillCost(m);
      rates.cloud_decode = m.decode_tokens_per_second();
    }
  }
  for (const auto& p : info.projections()) {
    if (p.source_fingerprint() == scout_->fingerprint() && p.target_model() == request.cloud_model)
      rates.projection = p.tokens_per_second();
  }
  // A request with a TTFT target is re-planned layer by layer after its prefill instead.
  rates.layerwise = options_.layerwise && !(request.ttft_target_seconds > 0);
  rates.answer_check = options_.answer_check;
  rates.kv_confidence_gate = options_.kv_min_confidence > 0 && options_.estimate_steps > 0;
  return info;
}

absl::StatusOr<std::vector<control::OperatingPoint>> EdgeService::ServablePoints(
    const ResolvedPolicy& request, const std::function<bool(const control::OperatingPoint&)>& allow,
    control::Rates& rates) {
  ASSIGN_OR_RETURN(const kvstream::v1::GetInfoResponse info, CloudRates(request, rates));
  const kvstream::v1::ModelInfo* kv_model = nullptr;
  const kvstream::v1::ModelInfo* answer_model = nullptr;
  for (const auto& m : info.models()) {
    if (m.fingerprint() == scout_->fingerprint()) kv_model = &m;
    if (m.name() == request.cloud_model) answer_model = &m;
  }
  const kvstream::v1::ProjectionInfo* projection = nullptr;
  for (const auto& p : info.projections()) {
    if (p.source_fingerprint() == scout_->fingerprint() && p.target_model() == request.cloud_model)
      projection = &p;
  }
  // Only points the cloud can serve: kv needs the scout there, projected a projection
  // from it into the named model, text/scout the named model.
  auto servable = [&](control::Mode mode) {
    switch (mode) {
      case kvstream::v1::MODE_KV:
        return kv_model != nullptr;
      case kvstream::v1::MODE_PROJECTED:
        return answer_model != nullptr && projection != nullptr;
      default:
        return answer_model != nullptr;
    }
  };
  std::vector<control::OperatingPoint> points;
  for (const control::OperatingPoint& p : options_.quality_table) {
    if (servable(p.mode) && (!allow || allow(p))) points.push_back(p);
  }
  if (points.empty() && kv_model != nullptr && answer_model != nullptr) {
    return absl::FailedPreconditionError(
        "adaptive: no operating point of the quality table is allowed for this request (the "
        "tenant's models, or every one rejected by the quality estimate)");
  }
  if (points.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "adaptive: no operating point is servable: the cloud ",
        kv_model ? "" : "does not serve the scout (kv) and ",
        answer_model
            ? ""
            : absl::StrCat("has no model '", request.cloud_model, "' (text/scout/projected)")));
  }
  return points;
}

absl::StatusOr<ResolvedPolicy> EdgeService::ChooseAdaptive(
    const ResolvedPolicy& request, int n, int context, kvstream::v1::RequestStats& stats,
    const std::function<bool(const control::OperatingPoint&)>& allow,
    control::OperatingPoint* chosen) {
  if (options_.quality_table.empty()) {
    return absl::UnimplementedError(
        "policy.mode ADAPTIVE: this edge was started without --quality_table; choose MODE_KV, "
        "MODE_SCOUT or "
        "MODE_TEXT, or restart it with a quality table");
  }
  control::Rates rates;
  ASSIGN_OR_RETURN(const std::vector<control::OperatingPoint> servable,
                   ServablePoints(request, allow, rates));
  // The table's qualities where they were measured at this prompt's length, priced down
  // by what the estimate has said of each point lately.
  const std::vector<control::OperatingPoint> points =
      estimate_history_.Discount(control::AtPromptLength(servable, n));
  double best = 0;
  for (const control::OperatingPoint& p : points) best = std::max(best, p.quality);
  const control::LinkState link = Link();
  const model::ModelConfig& c = scout_->config();
  ASSIGN_OR_RETURN(
      control::Decision d,
      control::Choose(points, {n, context}, {c.num_layers, c.num_kv_heads, c.head_dim}, rates, link,
                      request.ttft_target_seconds, options_.quality_floor * best));
  ResolvedPolicy out = request;
  out.mode = d.point.mode;
  out.selector = d.point.selector;
  out.retention = d.point.retention;
  out.spec = d.point.spec;
  if (pipeline::SendsCache(out.mode)) {
    ASSIGN_OR_RETURN(out.plan, codec::ParsePlan(out.spec));
  }
  stats.set_decision(absl::StrFormat("%s: %s (link %.1f Mbit/s, rtt %.0f ms)%s", d.point.label(),
                                     d.reason, link.bandwidth_bps / 1e6, link.rtt_seconds * 1000,
                                     SetAside(servable)));
  stats.set_predicted_ttft_seconds(d.prediction.ttft_seconds);
  if (chosen != nullptr) *chosen = d.point;
  out.replan = true;
  out.predicted_cloud_seconds = d.prediction.cloud_seconds;
  out.planned_bandwidth_bps = link.bandwidth_bps;
  metrics_->decisions.Add({{"mode", pipeline::ModeName(out.mode)}}).Increment();
  logging::Logf(logging::Level::kDebug, "edge", "adaptive: %s", stats.decision());
  return out;
}

std::string EdgeService::SetAside(const std::vector<control::OperatingPoint>& points) const {
  std::vector<std::string> aside;
  for (const control::OperatingPoint& p : points) {
    const double share = estimate_history_.RejectionShare(p.label());
    if (share >= 0.01) aside.push_back(absl::StrFormat("%s %.2f", p.label(), share));
  }
  if (aside.empty()) return "";
  return absl::StrCat("; recently rejected by the estimate: ", absl::StrJoin(aside, ", "));
}

grpc::Status EdgeService::Ask(grpc::ServerContext* context, const kvstream::v1::AskRequest* request,
                              grpc::ServerWriter<AskEvent>* writer) {
  metrics_->active.Increment();
  Request r;
  absl::StatusOr<net::PeerLimiter::Hold> hold = peers_->Acquire(context->peer());
  const absl::Status st = hold.ok() ? Serve(context, *request, writer, r) : hold.status();
  metrics_->active.Decrement();
  metrics_->Stages(r.stats.stages(), r.edge_prefill);
  grpc::Status out = net::ToGrpc(st);
  const char* mode = pipeline::ModeName(r.mode);
  metrics_->requests.Add({{"mode", mode}, {"code", net::CodeName(out.error_code())}}).Increment();
  if (!r.tenant.name.empty()) {  // tenants come from the token file: a bounded set
    metrics_->tenant_requests
        .Add({{"tenant", r.tenant.name}, {"code", net::CodeName(out.error_code())}})
        .Increment();
  }
  if (st.ok()) {
    const auto& s = r.stats;
    metrics_->raw_bytes.Add({{"mode", mode}}).Increment(static_cast<double>(s.raw_kv_bytes()));
    metrics_->wire_bytes.Add({{"mode", mode}}).Increment(static_cast<double>(s.wire_bytes()));
    metrics_->ttft.Add({{"mode", mode}}, metrics::SecondsBuckets()).Observe(s.ttft_seconds());
    metrics_->ratio.Add({{"mode", mode}}, metrics::RatioBuckets()).Observe(s.compression_ratio());
    logging::Logf(logging::Level::kInfo, "edge",
                  "ask done: %s mode, %d context tokens (%d kept), %d wire bytes (x%.1f), ttft "
                  "%.3f s, %d tokens%s",
                  mode, s.context_tokens(), s.kept_tokens(), s.wire_bytes(), s.compression_ratio(),
                  s.ttft_seconds(), s.tokens_generated(),
                  s.decision().empty() ? "" : absl::StrCat("; adaptive ", s.decision()));
  } else {
    logging::Logf(logging::Level::kWarning, "edge", "ask failed: %s mode: %s: %s", mode,
                  net::CodeName(out.error_code()), st.message());
  }
  return out;
}

}  // namespace kvstream::edge
