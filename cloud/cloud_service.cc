#include "cloud/cloud_service.h"

#include <grpcpp/support/method_handler.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cloud/uplink_reader.h"
#include "common/base/log.h"
#include "common/base/quote.h"
#include "common/base/status.h"
#include "common/codec/positions.h"
#include "common/metrics/metrics.h"
#include "common/model/chat.h"
#include "common/model/generate.h"
#include "common/model/kv_chunks.h"
#include "common/net/grpc_util.h"
#include "common/pipeline/pipeline.h"
#include "common/pipeline/session_open.h"

namespace kvstream::cloud {
namespace {

using Clock = std::chrono::steady_clock;
using kvstream::v1::Downlink;
using kvstream::v1::Mode;
using kvstream::v1::Uplink;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CANCELLED, or DEADLINE_EXCEEDED when the call's deadline has passed.
absl::Status Gone(grpc::ServerContext* context, absl::string_view when) {
  if (context->deadline() <= std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError(absl::StrCat("deadline passed ", when));
  }
  return absl::CancelledError(absl::StrCat("client cancelled ", when));
}

// An interrupt for model work: Gone once the call is cancelled or past its deadline.
pipeline::Interrupt Interrupter(grpc::ServerContext* context, const char* when) {
  return
      [context, when] { return context->IsCancelled() ? Gone(context, when) : absl::OkStatus(); };
}

// What makes a re-sent chunk the same chunk: the cells it covers and its payload's CRC.
struct ChunkIdentity {
  uint32_t crc = 0, layer_begin = 0, layer_end = 0, token_begin = 0, num_tokens = 0;
  static ChunkIdentity Of(const kvstream::v1::KvChunk& c) {
    return {c.crc32c(), c.layer_begin(), c.layer_end(), c.token_begin(), c.num_tokens()};
  }
  bool operator==(const ChunkIdentity& o) const {
    return crc == o.crc && layer_begin == o.layer_begin && layer_end == o.layer_end &&
           token_begin == o.token_begin && num_tokens == o.num_tokens;
  }
};

// `acquire()`, and while it refuses for a full quota (RESOURCE_EXHAUSTED) drops the oldest
// parked session (of `tenant` when not null) and tries again: parked sessions yield to
// live ones.
template <typename T, typename Acquire>
auto YieldingParked(ParkedSessions<T>& parked, const std::string* tenant, Acquire acquire)
    -> decltype(acquire()) {
  auto got = acquire();
  while (!got.ok() && got.status().code() == absl::StatusCode::kResourceExhausted &&
         parked.EvictOldest(tenant)) {
    got = acquire();
  }
  return got;
}

// Sleeps until `tokens` at `rate` tokens/s would have taken since `start` (emulation).
void PadTo(Clock::time_point start, int64_t tokens, double rate) {
  if (rate <= 0) return;
  const auto until = start + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(static_cast<double>(tokens) / rate));
  std::this_thread::sleep_until(until);
}

// Times prefill at two prompt lengths (best of three each; start-up is noisy, the other
// daemon may be loading too) and the first 16 decode steps after the longer one.
absl::Status MeasureRates(ServedModel& s, int probe_tokens) {
  const model::ModelConfig& c = s.model->config();
  const int n2 = std::max(4, std::min(probe_tokens * 2, c.max_position_embeddings / 2));
  const int n1 = std::max(2, std::min(probe_tokens / 2, n2 / 2));
  std::mt19937 rng(7);
  std::vector<int32_t> tokens(n2);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(c.vocab_size));
  // First-call costs (allocations, thread pools) are not prefill cost.
  RETURN_IF_ERROR(s.model->Prefill(absl::MakeSpan(tokens).subspan(0, 8)).status());
  for (const int n : {n1, n2}) {
    double best = 0;
    for (int round = 0; round < 3; ++round) {
      const auto t0 = Clock::now();
      ASSIGN_OR_RETURN(auto pre, s.model->Prefill(absl::MakeSpan(tokens).subspan(0, n)));
      const auto t1 = Clock::now();
      best = round == 0 ? Seconds(t0, t1) : std::min(best, Seconds(t0, t1));
      if (n != n2) continue;
      const int steps = 16;
      for (int i = 0; i < steps; ++i) {
        const int32_t p = pre.cache->next_position();
        ASSIGN_OR_RETURN(auto logits, s.model->Extend(*pre.cache, {tokens[i]}, {p}));
      }
      s.decode_tokens_per_second =
          std::max(s.decode_tokens_per_second, steps / std::max(1e-9, Seconds(t1, Clock::now())));
    }
    s.prefill_timings.emplace_back(n, std::max(1e-9, best));
  }
  s.prefill_tokens_per_second = n2 / s.prefill_timings.back().second;
  return absl::OkStatus();
}

// Sorted, so the order of --model / --projection flags does not matter.
std::string ModelCard(const std::vector<ServedModel>& models,
                      const std::vector<ServedProjection>& projections) {
  std::vector<std::string> parts;
  parts.reserve(models.size() + projections.size());
  for (const ServedModel& m : models)
    parts.push_back(absl::StrCat("model ", m.name, "=", m.model->fingerprint()));
  for (const ServedProjection& p : projections) {
    const model::ProjectionHeader& h = p.projection->header();
    parts.push_back(absl::StrCat("projection ", h.source.fingerprint, "->", models[p.target].name,
                                 "=", h.target.fingerprint));
  }
  std::sort(parts.begin(), parts.end());
  return net::Sha256Hex(absl::StrJoin(parts, "\n")).substr(0, 16);
}

}  // namespace

absl::StatusOr<ServedModel> LoadServedModel(const std::string& name, const std::string& dir,
                                            const model::RuntimeOptions& runtime,
                                            int probe_tokens) {
  ServedModel s;
  s.name = name;
  ASSIGN_OR_RETURN(s.model, model::Model::Load(dir, runtime));
  auto tok = model::Tokenizer::Load(dir + "/tokenizer.json");
  if (tok.ok()) s.tokenizer = std::move(*tok);
  s.stop_tokens = pipeline::StopTokens(*s.model, s.tokenizer.get());
  if (probe_tokens > 0) RETURN_IF_ERROR(MeasureRates(s, probe_tokens));
  return s;
}

absl::StatusOr<ServedProjection> LoadServedProjection(const std::string& path,
                                                      const std::vector<ServedModel>& models,
                                                      bool measure) {
  ServedProjection p;
  ASSIGN_OR_RETURN(p.projection, model::Projection::Load(path));
  const model::ProjectionHeader& h = p.projection->header();
  std::vector<std::string> served;
  bool found = false;
  for (size_t i = 0; i < models.size() && !found; ++i) {
    served.push_back(absl::StrCat(models[i].name, "=", models[i].model->fingerprint()));
    if (models[i].model->fingerprint() == h.target.fingerprint) {
      RETURN_IF_ERROR(p.projection->CheckTarget(*models[i].model));
      p.target = i;
      found = true;
    }
  }
  if (!found) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " maps into model ", h.target.fingerprint,
                     ", which is not served (serving ", absl::StrJoin(served, ", "), ")"));
  }
  if (measure) {
    // Slots mapped per second on a random 256-slot source cache, best of three.
    const int n = 256;
    std::vector<int32_t> positions(n);
    for (int i = 0; i < n; ++i) positions[i] = i;
    auto cache = model::KvCache::Create(h.source.num_layers, h.source.num_kv_heads,
                                        h.source.head_dim, positions, n);
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    std::vector<float> k(static_cast<size_t>(h.source.num_kv_heads) * n * h.source.head_dim),
        v(k.size());
    for (int l = 0; l < h.source.num_layers; ++l) {
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      RETURN_IF_ERROR(cache->WriteLayer(l, 0, n, k.data(), v.data()));
    }
    for (int round = 0; round < 3; ++round) {
      const auto t0 = Clock::now();
      ASSIGN_OR_RETURN(auto out, p.projection->Apply(*cache, *models[p.target].model));
      p.tokens_per_second =
          std::max(p.tokens_per_second, n / std::max(1e-9, Seconds(t0, Clock::now())));
    }
  }
  return p;
}

struct CloudService::Metrics {
  prometheus::Family<prometheus::Counter>& sessions;
  prometheus::Family<prometheus::Counter>& tenant_sessions;
  prometheus::Counter& received_bytes;
  prometheus::Counter& chunks;
  prometheus::Counter& tokens;
  prometheus::Family<prometheus::Histogram>& stages;
  prometheus::Gauge& active;
  prometheus::Gauge& reserved;
  prometheus::Gauge& budget;
  prometheus::Gauge& max_sessions;
  prometheus::Gauge& workers_busy;
  prometheus::Gauge& queued;
  prometheus::Histogram& queue_wait;
  prometheus::Gauge& parked;
  prometheus::Family<prometheus::Counter>& resumes;
  prometheus::Family<prometheus::Counter>& answer_checks;

  explicit Metrics(prometheus::Registry& r)
      : sessions(prometheus::BuildCounter()
                     .Name("kvstream_cloud_sessions_total")
                     .Help("Transfer sessions by mode and final gRPC status code")
                     .Register(r)),
        tenant_sessions(prometheus::BuildCounter()
                            .Name("kvstream_cloud_tenant_sessions_total")
                            .Help("Transfer sessions by tenant (token file) and final gRPC status "
                                  "code; only with --auth_tokens_file")
                            .Register(r)),
        received_bytes(prometheus::BuildCounter()
                           .Name("kvstream_cloud_received_chunk_bytes_total")
                           .Help("Serialized KvChunk bytes received from edges")
                           .Register(r)
                           .Add({})),
        chunks(prometheus::BuildCounter()
                   .Name("kvstream_cloud_chunks_total")
                   .Help("KvChunks received and acknowledged")
                   .Register(r)
                   .Add({})),
        tokens(prometheus::BuildCounter()
                   .Name("kvstream_cloud_generated_tokens_total")
                   .Help("Answer tokens generated and streamed")
                   .Register(r)
                   .Add({})),
        stages(prometheus::BuildHistogram()
                   .Name("kvstream_cloud_stage_seconds")
                   .Help("Time per session stage: rebuild (chunks to cache), prefill (scout/text), "
                         "first_token (commit to first token), decode (whole answer)")
                   .Register(r)),
        active(prometheus::BuildGauge()
                   .Name("kvstream_cloud_active_sessions")
                   .Help("Transfer sessions open now")
                   .Register(r)
                   .Add({})),
        reserved(prometheus::BuildGauge()
                     .Name("kvstream_cloud_cache_reserved_bytes")
                     .Help("Cache bytes reserved by open sessions (budget: --cache_budget_bytes)")
                     .Register(r)
                     .Add({})),
        budget(prometheus::BuildGauge()
                   .Name("kvstream_cloud_cache_budget_bytes")
                   .Help("--cache_budget_bytes: the cache bytes open sessions may reserve")
                   .Register(r)
                   .Add({})),
        max_sessions(prometheus::BuildGauge()
                         .Name("kvstream_cloud_max_sessions")
                         .Help("--max_sessions: the sessions that may be open at once")
                         .Register(r)
                         .Add({})),
        workers_busy(
            prometheus::BuildGauge()
                .Name("kvstream_cloud_model_workers_busy")
                .Help(
                    "Model worker slots held (Commit through generation); capacity --model_workers")
                .Register(r)
                .Add({})),
        queued(prometheus::BuildGauge()
                   .Name("kvstream_cloud_queued_sessions")
                   .Help("Committed sessions waiting for a model worker; capacity --max_queued")
                   .Register(r)
                   .Add({})),
        queue_wait(prometheus::BuildHistogram()
                       .Name("kvstream_cloud_queue_wait_seconds")
                       .Help("Time committed sessions waited for a model worker")
                       .Register(r)
                       .Add({}, metrics::SecondsBuckets())),
        parked(prometheus::BuildGauge()
                   .Name("kvstream_cloud_parked_sessions")
                   .Help("Sessions whose stream broke before Commit, held for a resume "
                         "(--resume_window_seconds)")
                   .Register(r)
                   .Add({})),
        resumes(prometheus::BuildCounter()
                    .Name("kvstream_cloud_resumes_total")
                    .Help("SessionOpen.resume requests by outcome (resumed, refused)")
                    .Register(r)),
        answer_checks(prometheus::BuildCounter()
                          .Name("kvstream_cloud_answer_checks_total")
                          .Help("Projected sessions' answer checks (Commit.check) by outcome: "
                                "passed, or answered_from_prompt when the first token differed")
                          .Register(r)) {}

  void Stage(const char* name, double seconds) {
    stages.Add({{"stage", name}}, metrics::SecondsBuckets()).Observe(seconds);
  }
};

struct CloudService::Session {
  std::string id;
  Mode mode = kvstream::v1::MODE_UNSPECIFIED;
  ServedModel* served = nullptr;
  const ServedProjection* projection = nullptr;  // projected mode
  // The map from the sender's cache into the served model's (projected mode), or null.
  const model::Projection* map() const {
    return projection != nullptr ? projection->projection.get() : nullptr;
  }
  pipeline::CheckedOpen checked;  // the SessionOpen, checked against the served model
  Lease lease;
  net::Tenant tenant;  // the token's tenant (empty name: no authentication)
  net::TenantLedger::Hold tenant_hold;
  kvstream::v1::CloudStats stats;
  // The first SessionOpen, serialized; a resume must repeat it.
  std::string open_bytes;
  // kv / projected: the chunks applied so far. A stream that breaks before Commit
  // parks the session with these, and a resume continues from them.
  std::unique_ptr<model::CacheAssembler> assembler;
  // Distinct chunks accepted (applied, once ReceiveChunks returns); the next new one must
  // carry this seq.
  uint64_t chunks = 0;
  std::map<uint64_t, ChunkIdentity> received;
  // Seconds spent on chunks: writing them into the cache (on the applier's thread) and
  // validating them (on the reader's), added into `rebuild` once both are done.
  double rebuild = 0, validate = 0;
  bool park = false;  // set when the stream broke and the session may be resumed
  // A progressive session with answer_after_seconds: when to answer without Commit (set
  // when the session opens, kept through a resume), and the uplink's reader while a
  // stream carries it (owned by RunSession).
  Clock::time_point answer_at;
  UplinkReader* reader = nullptr;
};

CloudService::CloudService(std::vector<ServedModel> models,
                           std::vector<ServedProjection> projections, const CloudOptions& options,
                           metrics::MetricsServer& metrics)
    : models_(std::move(models)),
      projections_(std::move(projections)),
      model_card_(ModelCard(models_, projections_)),
      options_(options),
      metrics_(std::make_unique<Metrics>(metrics.registry())) {
  // Transfer reads UplinkFrames (uplink_frame.h) where the generated handler would parse
  // whole Uplinks. The generated service numbers its methods as service.proto declares them.
  UplinkFrame::SetHoldPayloads(options.zero_copy_uplink);
  MarkMethodStreamed(net::TransferMethodIndex(),
                     new grpc::internal::BidiStreamingHandler<CloudService, UplinkFrame, Downlink>(
                         [](CloudService* service, grpc::ServerContext* context, Stream* stream) {
                           return service->ServeTransfer(context, stream);
                         },
                         this));
  Metrics* m = metrics_.get();
  watchdog_ = std::make_unique<net::StreamWatchdog>();
  m->budget.Set(static_cast<double>(options.cache_budget_bytes));
  m->max_sessions.Set(options.max_sessions);
  parked_ = std::make_unique<ParkedSessions<Session>>(
      options.resume_window_seconds,
      [m](size_t parked) { m->parked.Set(static_cast<double>(parked)); });
  peers_ =
      std::make_unique<net::PeerLimiter>(options.max_streams_per_peer, "--max_streams_per_peer");
  sessions_ = std::make_unique<SessionStore>(options.max_sessions, options.cache_budget_bytes,
                                             [m](uint32_t active, uint64_t bytes) {
                                               m->active.Set(active);
                                               m->reserved.Set(static_cast<double>(bytes));
                                             });
  gate_ = std::make_unique<base::AdmissionGate>(
      base::AdmissionGate::Options{options.model_workers, options.max_queued},
      [m](int running, int queued) {
        m->workers_busy.Set(running);
        m->queued.Set(queued);
      });
  for (ServedModel& s : models_) {
    if (options_.emulate_prefill_tokens_per_second > 0) {
      s.prefill_tokens_per_second = options_.emulate_prefill_tokens_per_second;
      s.prefill_timings.clear();  // the emulated rate is linear in length
    }
    if (options_.emulate_decode_tokens_per_second > 0) {
      s.decode_tokens_per_second = options_.emulate_decode_tokens_per_second;
    }
  }
}

CloudService::~CloudService() = default;

void CloudService::Drain() { gate_->Close(); }

grpc::Status CloudService::GetInfo(grpc::ServerContext* context,
                                   const kvstream::v1::GetInfoRequest*,
                                   kvstream::v1::GetInfoResponse* response) {
  if (options_.auth != nullptr) {
    if (absl::Status st = options_.auth->Check(*context).status(); !st.ok()) return net::ToGrpc(st);
  }
  for (const ServedModel& s : models_) {
    const model::ModelConfig& c = s.model->config();
    kvstream::v1::ModelInfo* info = response->add_models();
    info->set_name(s.name);
    info->set_fingerprint(s.model->fingerprint());
    info->mutable_dims()->set_num_layers(c.num_layers);
    info->mutable_dims()->set_num_kv_heads(c.num_kv_heads);
    info->mutable_dims()->set_head_dim(c.head_dim);
    info->mutable_dims()->set_vocab_size(c.vocab_size);
    info->mutable_dims()->set_max_position_embeddings(c.max_position_embeddings);
    info->set_prefill_tokens_per_second(s.prefill_tokens_per_second);
    info->set_decode_tokens_per_second(s.decode_tokens_per_second);
    for (const auto& [tokens, seconds] : s.prefill_timings) {
      kvstream::v1::PrefillTiming* t = info->add_prefill_timings();
      t->set_tokens(static_cast<uint32_t>(tokens));
      t->set_seconds(seconds);
    }
  }
  for (const ServedProjection& p : projections_) {
    const model::ProjectionHeader& h = p.projection->header();
    kvstream::v1::ProjectionInfo* info = response->add_projections();
    info->set_source_fingerprint(h.source.fingerprint);
    info->mutable_source_dims()->set_num_layers(h.source.num_layers);
    info->mutable_source_dims()->set_num_kv_heads(h.source.num_kv_heads);
    info->mutable_source_dims()->set_head_dim(h.source.head_dim);
    info->set_target_model(models_[p.target].name);
    info->set_target_fingerprint(h.target.fingerprint);
    info->set_tokens_per_second(p.tokens_per_second);
    double r2k = 0, r2v = 0;
    for (const model::ProjectionLayer& l : h.layers) {
      r2k += l.r2_k / h.layers.size();
      r2v += l.r2_v / h.layers.size();
    }
    info->set_mean_r2_k(r2k);
    info->set_mean_r2_v(r2v);
  }
  response->set_active_sessions(sessions_->active());
  response->set_cache_bytes_in_use(sessions_->bytes_in_use());
  response->set_max_sessions(sessions_->max_sessions());
  response->set_cache_budget_bytes(sessions_->budget_bytes());
  response->set_model_card(model_card_);
  return grpc::Status::OK;
}

absl::Status CloudService::Open(const kvstream::v1::SessionOpen& open, Session& s) {
  s.id = open.session_id();
  s.mode = open.mode();
  RETURN_IF_ERROR(pipeline::CheckSessionMode(s.mode));
  auto served_list = [&] {
    std::vector<std::string> names;
    for (const ServedModel& m : models_)
      names.push_back(absl::StrCat(m.name, "=", m.model->fingerprint()));
    return absl::StrJoin(names, ", ");
  };
  if (s.mode == kvstream::v1::MODE_KV) {
    for (ServedModel& m : models_) {
      if (m.model->fingerprint() == open.model_fingerprint()) s.served = &m;
    }
    if (s.served == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("kv mode needs the sender's model here: fingerprint '",
                       open.model_fingerprint(), "' is not served (serving ", served_list(), ")"));
    }
  } else {
    if (open.model_name().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("SessionOpen.model_name is empty; ", pipeline::ModeName(s.mode),
                       " mode names the cloud model (serving ", served_list(), ")"));
    }
    for (ServedModel& m : models_) {
      if (m.name == open.model_name()) s.served = &m;
    }
    if (s.served == nullptr) {
      return absl::NotFoundError(absl::StrCat(
          "model '", open.model_name(), "' is not served here (serving ", served_list(), ")"));
    }
    if (s.mode == kvstream::v1::MODE_PROJECTED) RETURN_IF_ERROR(OpenProjected(open, s));
  }
  const model::ModelConfig& c = s.served->model->config();
  ASSIGN_OR_RETURN(s.checked, pipeline::CheckSessionOpen(
                                  open, c, s.served->name,
                                  {options_.max_new_tokens, options_.default_new_tokens}));
  const uint64_t slots = s.checked.slots;
  const uint64_t max_tokens = static_cast<uint64_t>(s.checked.max_new_tokens);
  const uint64_t elem = s.served->model->is_bf16() ? 2 : 4;
  // A projected session whose answer check fails is answered from the whole prompt's
  // prefill instead (its projected cache freed first), so it may need a cache that long.
  const uint64_t cells = s.mode == kvstream::v1::MODE_PROJECTED
                             ? std::max<uint64_t>(slots, s.checked.next_position)
                             : slots;
  uint64_t bytes =
      (cells + max_tokens + 1) * c.num_layers * 2ull * c.num_kv_heads * c.head_dim * elem;
  if (s.projection != nullptr) {  // the sender's cache is rebuilt (float32) before it is mapped
    const model::ProjectionModel& src = s.projection->projection->header().source;
    bytes += slots * src.num_layers * 2ull * src.num_kv_heads * src.head_dim * 4;
  }
  if (!s.tenant.MayUse(s.served->name)) {
    return absl::PermissionDeniedError(absl::StrCat("tenant '", s.tenant.name, "' may use models ",
                                                    absl::StrJoin(s.tenant.models, ", "),
                                                    "; this session needs '", s.served->name, "'"));
  }
  // The tenant's quota first, so a tenant over it takes none of the daemon's budget.
  // The tenant's quota (its own parked sessions yield to it), then the daemon's (any
  // parked session yields).
  if (!s.tenant.name.empty()) {
    ASSIGN_OR_RETURN(s.tenant_hold, YieldingParked(*parked_, &s.tenant.name, [&] {
                       return tenants_->Acquire(s.tenant, bytes);
                     }));
  }
  ASSIGN_OR_RETURN(
      s.lease, YieldingParked(*parked_, nullptr, [&] { return sessions_->Acquire(s.id, bytes); }));
  return absl::OkStatus();
}

absl::Status CloudService::OpenProjected(const kvstream::v1::SessionOpen& open, Session& s) {
  std::vector<std::string> offered;
  for (const ServedProjection& p : projections_) {
    const model::ProjectionHeader& h = p.projection->header();
    offered.push_back(absl::StrCat(h.source.fingerprint, " -> ", models_[p.target].name));
    if (&models_[p.target] == s.served && h.source.fingerprint == open.model_fingerprint())
      s.projection = &p;
  }
  if (s.projection == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("projected mode: no projection from '", open.model_fingerprint(),
                     "' into model '", s.served->name, "' is served (projections: ",
                     offered.empty() ? "none" : absl::StrJoin(offered, ", "), ")"));
  }
  const kvstream::v1::ModelDims& d = open.dims();
  return s.projection->projection->CheckSource(
      open.model_fingerprint(), static_cast<int>(d.num_layers()),
      static_cast<int>(d.num_kv_heads()), static_cast<int>(d.head_dim()));
}

absl::StatusOr<std::unique_ptr<model::KvCache>> CloudService::BuildCache(
    grpc::ServerContext* context, Session& s) {
  const auto t0 = Clock::now();
  pipeline::RebuildTimes times;
  times.rebuild = s.rebuild;  // writing the chunks into the cache as they arrived
  ASSIGN_OR_RETURN(std::unique_ptr<model::KvCache> cache,
                   pipeline::Rebuild(s.mode, *s.served->model, s.checked, s.assembler.get(),
                                     s.map(), Interrupter(context, "during prefill"), &times));
  if (pipeline::CloudPrefills(s.mode)) {
    PadTo(t0, static_cast<int64_t>(s.checked.prompt.size()) - 1,
          options_.emulate_prefill_tokens_per_second);
    s.stats.set_prefill_seconds(Seconds(t0, Clock::now()));
    metrics_->Stage("prefill", s.stats.prefill_seconds());
    return cache;
  }
  s.stats.set_rebuild_seconds(times.rebuild);
  s.stats.set_slots_used(static_cast<uint32_t>(times.slots));
  metrics_->Stage("rebuild", times.rebuild);
  if (s.map() != nullptr) {
    s.stats.set_projection_seconds(times.projection);
    metrics_->Stage("project", times.projection);
  }
  return cache;
}

absl::Status CloudService::Attach(grpc::ServerContext* context,
                                  const kvstream::v1::SessionOpen& open,
                                  std::unique_ptr<Session>& s) {
  if (!open.resume()) {
    RETURN_IF_ERROR(Open(open, *s));
    open.SerializeToString(&s->open_bytes);
    s->assembler = pipeline::NewAssembler(s->mode, *s->served->model, s->map(), s->id, s->checked);
    s->answer_at =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(s->checked.answer_after_seconds));
    return absl::OkStatus();
  }
  if (!parked_->enabled()) {
    metrics_->resumes.Add({{"outcome", "refused"}}).Increment();
    return absl::NotFoundError(absl::StrCat(
        "no session '", open.session_id(),
        "' to resume: this cloud keeps none (--resume_window_seconds=0); send it again from "
        "the start"));
  }
  kvstream::v1::SessionOpen first = open;
  first.clear_resume();
  const std::string expected = first.SerializeAsString();
  // A session still receiving on a stream that broke moments ago (the cloud has not
  // noticed yet) is waited for a little; one neither receiving nor parked is not coming.
  const auto wait = std::min<Clock::duration>(
      std::chrono::seconds(2), std::chrono::duration_cast<Clock::duration>(
                                   context->deadline() - std::chrono::system_clock::now()));
  absl::StatusOr<std::unique_ptr<Session>> taken =
      parked_->Take(open.session_id(), s->tenant.name, wait, [&](const Session& parked) {
        return parked.open_bytes == expected
                   ? absl::OkStatus()
                   : absl::InvalidArgumentError(absl::StrCat(
                         "resume of session '", open.session_id(),
                         "': its SessionOpen differs from the first one (a resume repeats "
                         "every field and sets resume)"));
      });
  metrics_->resumes.Add({{"outcome", taken.ok() ? "resumed" : "refused"}}).Increment();
  if (!taken.ok()) return taken.status();
  s = std::move(*taken);
  s->park = false;
  logging::Logf(logging::Level::kInfo, "cloud", "session %s resumed after %llu chunks", s->id,
                static_cast<unsigned long long>(s->chunks));
  return absl::OkStatus();
}

absl::Status CloudService::Broken(grpc::ServerContext* context, Session& s,
                                  absl::string_view when) {
  absl::Status gone = Gone(context, when);
  // A broken connection (not a passed deadline) leaves a kv / projected session parked for
  // a resume.
  s.park =
      gone.code() == absl::StatusCode::kCancelled && s.assembler != nullptr && parked_->enabled();
  if (!s.park) return gone;
  return absl::CancelledError(absl::StrCat(gone.message(), "; the session is kept ",
                                           parked_->window_seconds(), " s for a resume"));
}

absl::Status CloudService::ReceiveChunks(grpc::ServerContext* context, Stream* stream, Session& s,
                                         net::StreamWatchdog::Watch& watch,
                                         uint64_t& committed_chunks) {
  // Chunks are acknowledged as they are accepted and applied behind the reader; every
  // way out waits for them, so a parked or answered session holds all it acknowledged.
  ChunkApplier applier(kMaxQueuedChunkBytes);
  absl::Status read = ReadChunks(context, stream, s, watch, committed_chunks, applier);
  const auto t0 = Clock::now();
  absl::Status applied = applier.Drain();
  s.stats.set_rebuild_wait_seconds(Seconds(t0, Clock::now()));
  s.rebuild += s.validate;
  s.validate = 0;
  if (!applied.ok()) {
    s.park = false;  // it acknowledged a chunk it could not apply: no resume from here
    return applied;
  }
  return read;
}

absl::Status CloudService::ReadChunks(grpc::ServerContext* context, Stream* stream, Session& s,
                                      net::StreamWatchdog::Watch& watch, uint64_t& committed_chunks,
                                      ChunkApplier& applier) {
  UplinkFrame up;
  bool late = false;  // a progressive session past its answer_after_seconds
  for (;;) {
    const NextUplink next = ReadNext(stream, s, late, up);
    if (next == NextUplink::kLate) {
      late = true;
      ASSIGN_OR_RETURN(const bool ready, FirstTierHeld(s, applier));
      if (ready) return AnswerEarly(stream, s, committed_chunks);
      continue;
    }
    // The watchdog's cancel ends the stream; a reader may still hold messages read before.
    if (watch.expired()) {
      return absl::DeadlineExceededError(
          absl::StrCat("session idle for ", options_.idle_timeout_seconds,
                       " s before Commit, after ", s.chunks, " chunks (--idle_timeout_seconds)"));
    }
    if (next == NextUplink::kClosed) {
      if (!context->IsCancelled()) {
        return absl::InvalidArgumentError(
            absl::StrCat("stream closed before Commit, after ", s.chunks, " chunks"));
      }
      return Broken(context, s, absl::StrCat("before Commit, after ", s.chunks, " chunks"));
    }
    watch.ExtendBy(options_.idle_timeout_seconds);
    const Uplink& m = up.message;
    if (m.has_commit()) {
      committed_chunks = m.commit().num_chunks();
      return pipeline::CheckAnswerCheck(m.commit(), s.mode, s.served->model->config(),
                                        s.served->name, s.checked);
    }
    if (m.has_open()) {
      return absl::InvalidArgumentError(
          "a second SessionOpen on one stream; one session per stream");
    }
    ASSIGN_OR_RETURN(const bool is_new, AcceptChunk(m.chunk(), s));
    const uint64_t seq = m.chunk().seq(), size = up.chunk_bytes();
    if (is_new) RETURN_IF_ERROR(QueueChunk(std::move(up), s, applier));
    metrics_->received_bytes.Increment(static_cast<double>(size));
    metrics_->chunks.Increment();
    Downlink ack;
    ack.mutable_ack()->set_seq(seq);
    ack.mutable_ack()->set_payload_bytes(size);
    if (!stream->Write(ack)) return Broken(context, s, "while chunks were acked");
    if (late) {
      ASSIGN_OR_RETURN(const bool ready, FirstTierHeld(s, applier));
      if (ready) return AnswerEarly(stream, s, committed_chunks);
    }
  }
}

CloudService::NextUplink CloudService::ReadNext(Stream* stream, Session& s, bool late,
                                                UplinkFrame& up) {
  if (s.reader == nullptr) return stream->Read(&up) ? NextUplink::kMessage : NextUplink::kClosed;
  // Past the deadline, wait for the chunks that complete the first tier (or Commit).
  const Clock::time_point until = late ? Clock::now() + std::chrono::hours(24) : s.answer_at;
  switch (s.reader->Next(&up, until)) {
    case UplinkReader::Got::kMessage:
      return NextUplink::kMessage;
    case UplinkReader::Got::kClosed:
      return NextUplink::kClosed;
    case UplinkReader::Got::kTimedOut:
      break;
  }
  return NextUplink::kLate;
}

absl::StatusOr<bool> CloudService::FirstTierHeld(Session& s, ChunkApplier& applier) {
  RETURN_IF_ERROR(applier.Drain());
  return s.assembler->CompletePrefix() >= static_cast<int>(s.checked.tier_slots.front());
}

absl::Status CloudService::AnswerEarly(Stream* stream, Session& s, uint64_t& committed_chunks) {
  committed_chunks = s.chunks;  // as if Commit had come now
  s.reader->Discard();
  SendStop(stream, "answering from the tiers received");
  logging::Logf(logging::Level::kDebug, "cloud",
                "session %s: no Commit after %.3f s; answering from the %d slots held of %zu", s.id,
                s.checked.answer_after_seconds, s.assembler->CompletePrefix(),
                static_cast<size_t>(s.checked.slots));
  return absl::OkStatus();
}

absl::StatusOr<bool> CloudService::AcceptChunk(const kvstream::v1::KvChunk& chunk, Session& s) {
  if (s.assembler == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvChunk in ", pipeline::ModeName(s.mode),
                     " mode; chunks are only accepted in kv and projected modes"));
  }
  // A re-sent chunk (same seq and cells, e.g. after a lost ack) is acked again and not
  // applied twice; the same seq with other content is an error.
  const auto seen = s.received.find(chunk.seq());
  if (seen != s.received.end()) {
    if (!(seen->second == ChunkIdentity::Of(chunk))) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk seq ", chunk.seq(), " arrived twice with different content"));
    }
    return false;
  }
  if (chunk.seq() != s.chunks) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk seq ", chunk.seq(), " arrived where seq ", s.chunks,
                     " was expected (sequence numbers run 0, 1, 2, ... without gaps)"));
  }
  s.received.emplace(chunk.seq(), ChunkIdentity::Of(chunk));
  ++s.chunks;
  return true;
}

absl::Status CloudService::QueueChunk(UplinkFrame frame, Session& s, ChunkApplier& applier) {
  auto prefixed = [seq = frame.message.chunk().seq()](const absl::Status& st) {
    return absl::Status(st.code(), absl::StrCat("chunk seq ", seq, ": ", st.message()));
  };
  auto owned = std::make_shared<std::pair<UplinkFrame, codec::ChunkMeta>>(std::move(frame),
                                                                          codec::ChunkMeta());
  const codec::PayloadView payload = owned->first.payload();  // valid while `owned` lives
  // Integrity first, so a chunk is acknowledged only once it arrived intact.
  const auto t0 = Clock::now();
  auto meta = s.assembler->Validate(owned->first.message.chunk(), payload);
  s.validate += Seconds(t0, Clock::now());
  if (!meta.ok()) return prefixed(meta.status());
  owned->second = *std::move(meta);
  return applier.Push(payload.size(), [&s, owned, payload, prefixed]() -> absl::Status {
    const auto t = Clock::now();
    const absl::Status added = s.assembler->AddValidated(payload, owned->second);
    s.rebuild += Seconds(t, Clock::now());
    return added.ok() ? added : prefixed(added);
  });
}

absl::Status CloudService::RunSession(grpc::ServerContext* context, Stream* stream,
                                      std::unique_ptr<Session>& s) {
  if (options_.auth != nullptr) {
    ASSIGN_OR_RETURN(s->tenant, options_.auth->Check(*context));
  }
  // A stream that sends no SessionOpen, or an open session that goes quiet, is cancelled
  // at its timeout so it cannot hold a thread or a session slot.
  const std::unique_ptr<net::StreamWatchdog::Watch> watch =
      watchdog_->Start(context, options_.open_timeout_seconds);
  UplinkFrame first;
  if (!stream->Read(&first)) {
    if (watch->expired()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no SessionOpen within ", options_.open_timeout_seconds, " s (--open_timeout_seconds)"));
    }
    return context->IsCancelled() ? Gone(context, "before SessionOpen")
                                  : absl::InvalidArgumentError("stream closed before SessionOpen");
  }
  const Uplink& up = first.message;
  if (!up.has_open()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected SessionOpen as the first message, found ",
                     up.has_chunk() ? "a KvChunk" : "Commit"));
  }
  RETURN_IF_ERROR(Attach(context, up.open(), s));
  if (s->assembler != nullptr) parked_->BeginReceiving(s->id);
  watch->ExtendBy(options_.idle_timeout_seconds);
  Downlink opened;
  opened.mutable_opened()->set_next_seq(s->chunks);
  if (!stream->Write(opened)) return Broken(context, *s, "as the session opened");
  logging::Logf(logging::Level::kDebug, "cloud", "session %s open: %s mode, model %s, %zu slots",
                s->id, pipeline::ModeName(s->mode), s->served->name,
                static_cast<size_t>(s->checked.slots));
  std::unique_ptr<UplinkReader> reader;
  if (s->assembler != nullptr && s->checked.answer_after_seconds > 0) {
    reader = std::make_unique<UplinkReader>(stream, kMaxQueuedChunkBytes);
    s->reader = reader.get();
  }
  absl::Status st = ReceiveAndAnswer(context, stream, *s, *watch);
  if (reader != nullptr) {
    // Told to stop, the edge half-closes; past a grace period (an outage holding its
    // uplink) the call is cancelled so that the reader can end.
    if (!st.ok()) SendStop(stream, st.message());
    reader->Close([context] { context->TryCancel(); }, std::chrono::seconds(5));
    s->reader = nullptr;
  }
  return st;
}

void CloudService::SendStop(Stream* stream, absl::string_view reason) {
  Downlink stop;
  stop.mutable_stop()->set_reason(std::string(base::Bounded(reason, 200)));
  stream->Write(stop);  // a broken stream needs no telling
}

absl::Status CloudService::ReceiveAndAnswer(grpc::ServerContext* context, Stream* stream,
                                            Session& s, net::StreamWatchdog::Watch& watch) {
  uint64_t committed_chunks = 0;
  RETURN_IF_ERROR(ReceiveChunks(context, stream, s, watch, committed_chunks));
  parked_->EndReceiving(s.id);
  watch.Disarm();  // model work and generation are bounded by the call's own deadline
  if (committed_chunks != s.chunks) {
    return absl::InvalidArgumentError(absl::StrCat("Commit says ", committed_chunks,
                                                   " chunks were sent but ", s.chunks, " arrived"));
  }
  return Answer(context, stream, s);
}

absl::Status CloudService::Answer(grpc::ServerContext* context, Stream* stream, Session& s) {
  const auto committed = Clock::now();
  // One model worker from here through generation; queue time counts against the deadline.
  ASSIGN_OR_RETURN(base::AdmissionGate::Slot slot, gate_->Acquire(context->deadline(), [context] {
    return context->IsCancelled() ? Gone(context, "while queued for a model worker")
                                  : absl::OkStatus();
  }));
  s.stats.set_queue_seconds(slot.wait_seconds());
  metrics_->queue_wait.Observe(slot.wait_seconds());
  model::Model& m = *s.served->model;
  ASSIGN_OR_RETURN(std::unique_ptr<model::KvCache> cache, BuildCache(context, s));
  if (context->IsCancelled()) return Gone(context, "before generation");

  // Generate, streaming each token as it comes.
  const auto decode_start = Clock::now();
  bool write_failed = false;
  uint32_t index = 0;
  auto on_token = [&](int32_t id) {
    PadTo(decode_start, index + 1, options_.emulate_decode_tokens_per_second);
    Downlink d;
    d.mutable_token()->set_index(index);
    d.mutable_token()->set_id(id);
    if (s.served->tokenizer != nullptr) {
      auto text = s.served->tokenizer->Decode({id});
      if (text.ok()) d.mutable_token()->set_text(*text);
    }
    if (index == 0) s.stats.set_first_token_seconds(Seconds(committed, Clock::now()));
    ++index;
    metrics_->tokens.Increment();
    if (!stream->Write(d)) {
      write_failed = true;
      return false;
    }
    return !context->IsCancelled();
  };
  pipeline::CheckOutcome check;
  ASSIGN_OR_RETURN(
      model::Generation g,
      pipeline::GenerateChecked(
          m, cache, s.checked, pipeline::Sampling(s.checked, s.served->stop_tokens),
          Interrupter(context, "during the prefill after a failed check"), on_token, &check,
          [&](double seconds) {  // --emulate_prefill_tokens_per_second, as for text
            PadTo(Clock::now() - std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(seconds)),
                  static_cast<int64_t>(s.checked.prompt.size()) - 1,
                  options_.emulate_prefill_tokens_per_second);
          }));
  if (write_failed || context->IsCancelled()) return Gone(context, "during generation");
  RecordCheck(check, s);
  if (index == 0) s.stats.set_first_token_seconds(Seconds(committed, Clock::now()));
  s.stats.set_decode_seconds(Seconds(decode_start, Clock::now()));
  s.stats.set_tokens_generated(static_cast<uint32_t>(g.tokens.size()));
  s.stats.set_stop_reason(g.stop_reason);
  metrics_->Stage("first_token", s.stats.first_token_seconds());
  metrics_->Stage("decode", s.stats.decode_seconds());
  Downlink done;
  *done.mutable_done()->mutable_stats() = s.stats;
  stream->Write(done);
  return absl::OkStatus();
}

void CloudService::RecordCheck(const pipeline::CheckOutcome& check, Session& s) {
  if (!check.checked) return;
  s.stats.set_checked(true);
  s.stats.set_answered_from_prompt(check.answered_from_prompt);
  metrics_->answer_checks
      .Add({{"outcome", check.answered_from_prompt ? "answered_from_prompt" : "passed"}})
      .Increment();
  if (!check.answered_from_prompt) return;
  s.stats.set_prefill_seconds(s.stats.prefill_seconds() + check.prefill_seconds);
  s.stats.set_slots_used(static_cast<uint32_t>(s.checked.prompt.size() - 1));
  metrics_->Stage("prefill", check.prefill_seconds);
  logging::Logf(logging::Level::kInfo, "cloud",
                "session %s: the projected cache's first token was not the sender's %d; "
                "answered from the prompt (%.1f ms prefill)",
                s.id, s.checked.check_token, 1e3 * check.prefill_seconds);
}

grpc::Status CloudService::ServeTransfer(grpc::ServerContext* context, Stream* stream) {
  auto s = std::make_unique<Session>();
  absl::StatusOr<net::PeerLimiter::Hold> hold = peers_->Acquire(context->peer());
  const absl::Status st = hold.ok() ? RunSession(context, stream, s) : hold.status();
  grpc::Status out = net::ToGrpc(st);
  metrics_->sessions
      .Add({{"mode", pipeline::ModeName(s->mode)}, {"code", net::CodeName(out.error_code())}})
      .Increment();
  if (!s->tenant.name.empty()) {  // tenants come from the token file: a bounded set
    metrics_->tenant_sessions
        .Add({{"tenant", s->tenant.name}, {"code", net::CodeName(out.error_code())}})
        .Increment();
  }
  if (st.ok()) {
    logging::Logf(logging::Level::kInfo, "cloud",
                  "session %s done: %s mode, model %s, %u tokens (%s)", s->id,
                  pipeline::ModeName(s->mode), s->served->name, s->stats.tokens_generated(),
                  s->stats.stop_reason());
  } else {
    logging::Logf(logging::Level::kWarning, "cloud", "session %s ended: %s: %s",
                  s->id.empty() ? "-" : s->id, net::CodeName(out.error_code()), st.message());
  }
  if (s->park) {
    const std::string id = s->id, tenant = s->tenant.name;
    parked_->Park(id, tenant, std::move(s));
  } else if (!s->id.empty()) {
    parked_->EndReceiving(s->id);
  }
  return out;  // otherwise the session's lease is released here, whatever the outcome
}

}  // namespace kvstream::cloud
