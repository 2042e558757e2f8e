// kvstream-edge's EdgeService: Ask(context, question, policy) -> answer tokens, then the
// request's stats. Per request: ChatML prompt with spans -> tokenize -> scout prefill
// (with attention statistics when a selector needs them) -> select -> encode chunks ->
// one CloudService.Transfer stream (SessionOpen, KvChunks written one at a time, so
// gRPC flow control paces the edge, then Commit) -> relay the cloud's tokens.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/base/admission.h"
#include "common/control/controller.h"
#include "common/control/estimate_history.h"
#include "common/metrics/metrics.h"
#include "common/model/model.h"
#include "common/model/quality_probe.h"
#include "common/model/tokenizer.h"
#include "common/net/auth.h"
#include "common/net/peer_limit.h"
#include "common/net/shaper.h"
#include "common/net/tenant_ledger.h"
#include "common/pipeline/pipeline.h"
#include "edge/policy.h"
#include "edge/replica_set.h"
#include "edge/transfer.h"
#include "kvstream/v1/service.grpc.pb.h"

namespace kvstream::edge {

// What the edge does when the Transfer stream to the cloud breaks (UNAVAILABLE) before
// any answer token reached the client: return the error, send the same payload again on
// a new stream, or send the prompt as text (the cloud's model prefills it).
enum class OnTransferFailure { kFail, kRetry, kText };
absl::StatusOr<OnTransferFailure> ParseOnTransferFailure(absl::string_view name);

struct EdgeOptions {
  std::string cloud_address;
  std::shared_ptr<grpc::Channel> cloud_channel;  // null: an insecure channel to cloud_address
  int max_streams_per_peer = 0;                  // Ask calls one client address holds (0: any)
  OnTransferFailure on_transfer_failure = OnTransferFailure::kRetry;
  int transfer_retries = 1;  // further streams after a broken one (jittered backoff between)
  // Cloud replicas behind cloud_address (1 when unknown). A session a replica refuses at
  // SessionOpen for its limits (RESOURCE_EXHAUSTED) is offered to the next one, up to
  // twice this many tries, before the client gets the refusal.
  int cloud_replicas = 1;
  // --cloud_lb=least_loaded: the replicas, each session sent to the one with the most room
  // (null: every call on cloud_channel).
  std::shared_ptr<ReplicaSet> replica_set;
  kvstream::v1::Policy defaults;  // mode, selector, retention, spec, max_tokens, cloud_model
  std::string system_prompt = "Answer with the value from the context.";
  uint64_t chunk_bytes = 1 << 20;  // cap on a chunk's payload before zstd
  // Payloads go to gRPC where they are, shared with the copies kept for a retry (false:
  // copied into each message's buffer, for comparison).
  bool zero_copy_uplink = true;
  int snapkv_window = 32;
  // Threads that encode one request's chunks (after its prefill, while it holds its model
  // worker): the worker's share of the cores (--threads).
  int encode_threads = 1;
  // Link emulation on the uplink (null: none): every uplink message waits for its bytes
  // to cross the shaped link; one one-way delay before the first uplink message and
  // before the first downlink message of each request.
  std::shared_ptr<net::Shaper> shaper;
  // Adaptive mode: the operating points and their expected quality (empty: adaptive
  // requests are UNIMPLEMENTED), the bandwidth assumed before any measurement, the
  // quality floor, and the scout's prefill cost against prompt length for the cost
  // model (each request's measured prefill then recalibrates it).
  std::vector<control::OperatingPoint> quality_table;
  double initial_bandwidth_bps = 100e6;
  double initial_rtt_seconds = 0.02;
  // Adaptive minimising TTFT considers points whose quality at the prompt's length is at
  // least this share of the best servable point's there (--quality_floor).
  double quality_floor = 0;
  // Adaptive: before sending a kv / projected plan, rebuild it on the scout and compare
  // its first `estimate_steps` next-token distributions with the full cache's (0: off;
  // a selection: at least `estimate_selection_steps`).
  // A plan whose greedy tokens agree less than `estimate_min_agreement`, or whose mean
  // KL exceeds `estimate_max_kl` (0: no limit), is rejected and the controller chooses
  // again (EdgeService::AfterRejection).
  int estimate_steps = 0;
  // The least steps for a plan that drops positions (a selection): what a selection
  // drops can matter only to a later answer token (a second hop's record), while
  // quantizing the whole cache shows in the first.
  int estimate_selection_steps = 3;
  // Adaptive, with the estimate: price each point's quality down by the share of its
  // recent estimates that rejected it (control::EstimateHistory), so a kind of request
  // the table does not know stops paying for the same rejected choice every time.
  bool estimate_history = true;
  double estimate_min_agreement = 1.0;
  double estimate_max_kl = 0;
  // Run the estimate while the plan's chunks are sent and hold Commit for its verdict
  // (a rejected plan's stream is closed without Commit and the new choice sent), so on
  // a fast link the estimate does not add to TTFT. Not with layer-by-layer re-planning.
  bool estimate_overlap = true;
  // Projected requests carry an answer check in Commit (the scout's first answer token and
  // the prompt): the cloud answers from the prompt when the projected cache would start
  // the answer with another token (RequestStats.answer_check).
  bool answer_check = true;
  // Adaptive, with the estimate: a kv point is rejected when the scout's own probability
  // of its first answer token (full cache) is below this (0: never), and the controller
  // chooses again among text and the same selection projected into the cloud model.
  double kv_min_confidence = 0;  // --kv_min_confidence, or the quality table's (main.cc)
  // kv / projected requests without a selector, but adaptive ones with a TTFT target
  // (re-planned layer by layer after the prefill); an adaptive one's estimate runs after
  // the prefill, beside the rest of the transfer (needs estimate_overlap):
  // the stream opens before the scout's prefill, and each layer is encoded and sent as
  // soon as the prefill has computed it, so the transfer overlaps the computation.
  bool layerwise = true;
  control::PrefillCost edge_prefill;
  control::PrefillCost edge_prefill_stats;  // while collecting attention statistics
  // Admission control: requests that run the scout (kv, and scout mode with a selector)
  // hold one of `model_workers` slots from prefill to encode; up to `max_queued` wait.
  int model_workers = 1;
  int max_queued = 32;
  // Clients must present a token from this set (null: no authentication); the edge
  // presents `cloud_token` to the cloud (empty: none).
  std::shared_ptr<net::TokenAuthenticator> auth;
  std::string cloud_token;
};

class EdgeService final : public kvstream::v1::EdgeService::Service {
 public:
  EdgeService(std::unique_ptr<model::Model> scout, std::unique_ptr<model::Tokenizer> tokenizer,
              const EdgeOptions& options, metrics::MetricsServer& metrics);
  ~EdgeService() override;

  grpc::Status Ask(grpc::ServerContext* context, const kvstream::v1::AskRequest* request,
                   grpc::ServerWriter<kvstream::v1::AskEvent>* writer) override;

  // Drain: queued requests and later ones that need the scout get UNAVAILABLE.
  void Drain();

 private:
  struct Metrics;
  struct Request;
  // The stages of one Ask, in order: Serve runs Prepare, BuildPayload and Transfer.
  absl::Status Serve(grpc::ServerContext* context, const kvstream::v1::AskRequest& request,
                     grpc::ServerWriter<kvstream::v1::AskEvent>* writer, Request& r);
  // Validates the request, resolves its policy (adaptive: picks a point), tokenizes,
  // and checks the prompt against both models' positions.
  absl::Status Prepare(const kvstream::v1::AskRequest& request, Request& r);
  absl::Status CheckLengths(Request& r);
  // The tenant's rights (PERMISSION_DENIED for a model outside its models=) and quotas
  // (RESOURCE_EXHAUSTED past max_sessions concurrent requests or max_cache_bytes of
  // scout cache), held until the request ends.
  absl::Status CheckTenant(Request& r);
  // Adaptive: `r.tenant_allows`, the quality-table points whose answering model the tenant
  // may use (kv: the cloud's copy of the scout); PERMISSION_DENIED when there are none, the
  // cloud's error when it cannot say which model answers kv.
  absl::Status SetTenantPoints(Request& r);
  // The cloud model that answers `mode`: `cloud_model`, or in kv mode the cloud's copy of
  // the scout (found by fingerprint).
  absl::StatusOr<std::string> AnsweringModel(kvstream::v1::Mode mode,
                                             const std::string& cloud_model);
  // UNAVAILABLE, before any model work, when the cloud's channel is failing to connect
  // (or does not connect within a second); OK when it is connected.
  absl::Status CloudReady(grpc::ServerContext* context);
  // The SessionOpen and, for kv / projected, the chunks: admission, prefill, selection,
  // encode (nothing heavy for text, or scout without a selector).
  absl::Status BuildPayload(grpc::ServerContext* context, Request& r);
  absl::StatusOr<select::Selection> PrefillAndSelect(grpc::ServerContext* context, Request& r);
  // The selection of the request's current policy from the prefill's statistics in
  // `r.pre` (its ranking in `r`, its kept tokens in the stats, its time added to the
  // select stage).
  absl::StatusOr<select::Selection> SelectFromPrefill(Request& r);
  // Transfer streams until one answers (recovering per --on_transfer_failure), then
  // records the stats and writes them last.
  absl::Status Transfer(grpc::ServerContext* context,
                        grpc::ServerWriter<kvstream::v1::AskEvent>* writer, Request& r);
  // One Transfer stream: sends the payload and relays the answer tokens.
  absl::Status TransferOnce(grpc::ServerContext* context,
                            grpc::ServerWriter<kvstream::v1::AskEvent>* writer, Request& r,
                            CloudTransfer::Result& result);
  // The outcome of one Transfer stream that `TransferOnce` finished: OK with its Done;
  // UNAVAILABLE for a stream the cloud broke or cancelled (tried again by the caller);
  // otherwise the cloud's status, or the client's going away.
  absl::Status StreamStatus(grpc::ServerContext* context, const CloudTransfer::Result& result,
                            const Request& r);
  // After a broken stream (`failure`, `broken`): waits a jittered backoff within the
  // deadline and readies `r` for the next attempt: a resume of the session when the cloud
  // had opened it, else StartAfresh.
  absl::Status PrepareRetry(grpc::ServerContext* context, const absl::Status& failure, int attempt,
                            const CloudTransfer::Result& broken, Request& r);
  // A new session id for the payload, or text mode (--on_transfer_failure=text); the
  // recovery stats say `what` broke.
  absl::Status StartAfresh(Request& r, const std::string& what);
  // The stats and log of a resumed session (`t`: the stream that resumed it).
  void NoteResumed(const CloudTransfer::Result& t, Request& r);
  // Whether chunks are kept after sending, for a resume or another attempt.
  bool KeepsChunks() const;
  // An adaptive request that sends a cache checks its plan with the quality estimate.
  bool Estimates(const Request& r) const;
  // The estimate's steps for a plan sending `kept` (empty: the whole cache), and the most
  // any plan takes (the probe's).
  int EstimateSteps(const std::vector<int32_t>& kept) const;
  int ProbeSteps() const;
  // The points an unsure scout's kv answer may go to instead: text, or the same selection
  // projected into the cloud model, as the request's tenant allows.
  std::function<bool(const control::OperatingPoint&)> InsteadOfScout(const Request& r) const;
  // Whether one of those is servable, so that an unsure scout's answer has somewhere to go.
  bool CloudModelAllowed(const Request& r);
  // Re-planning kv: encodes and sends a layer at a time down the spec ladder.
  absl::Status SendReplanned(CloudTransfer& transfer, Request& r, bool& sent_ok);
  // --layerwise: the prefill (holding the request's model worker slot), each layer's
  // chunks sent on `transfer` while the next layer is computed.
  absl::Status SendWhilePrefilling(grpc::ServerContext* context, CloudTransfer& transfer,
                                   Request& r, bool& sent_ok);
  // The chunks from `first` on, encoded before the transfer; a progressive plan with a
  // TTFT target stops before a tier that would not reach the cloud in time.
  void SendChunks(CloudTransfer& transfer, Request& r, uint64_t first, bool& sent_ok);
  // Progressive sending: whether chunk `i`, the first of a tier after the first, should
  // not be sent (its tier's bytes, after those still unacked, would cross the link after
  // the TTFT target less the cloud's predicted time).
  bool StopBeforeTier(CloudTransfer& transfer, const Request& r, size_t i);
  // The cloud's predicted share of the request's TTFT (rebuild, projection, first
  // token) by the cost model, for the policy chosen.
  absl::StatusOr<double> PredictCloudSeconds(const Request& r);
  // After encoding a progressive plan with a TTFT target: each chunk's tier and the
  // cloud's predicted time.
  absl::Status PlanTiers(Request& r);
  // Folds a prefill's time into the cost model's calibration.
  void ObservePrefill(const Request& r, double seconds);
  void RecordTransfer(const CloudTransfer::Result& result, Request& r);
  // Waits for a model worker within the call's deadline (queue time into `stages`).
  absl::StatusOr<base::AdmissionGate::Slot> Admit(grpc::ServerContext* context,
                                                  kvstream::v1::StageSeconds& stages);
  // The quality table's points the cloud serves for `request` (kv: the scout there;
  // projected: a projection into the named model; text / scout: the named model) that
  // `allow` (may be null) lets through, and the rates the cost model prices them with.
  absl::StatusOr<std::vector<control::OperatingPoint>> ServablePoints(
      const ResolvedPolicy& request,
      const std::function<bool(const control::OperatingPoint&)>& allow, control::Rates& rates);
  // The rates the cost model prices `request` with (the edge's calibrated prefill, the
  // cloud's GetInfo), and that GetInfo.
  absl::StatusOr<kvstream::v1::GetInfoResponse> CloudRates(const ResolvedPolicy& request,
                                                           control::Rates& rates);
  // Adaptive mode: picks a point for `n` prompt tokens (`context` of them context) from
  // the quality table, the link estimate and the measured rates.
  // `allow` (may be null) narrows the table's points; the point chosen goes to `chosen`.
  absl::StatusOr<ResolvedPolicy> ChooseAdaptive(
      const ResolvedPolicy& request, int n, int context, kvstream::v1::RequestStats& stats,
      const std::function<bool(const control::OperatingPoint&)>& allow = nullptr,
      control::OperatingPoint* chosen = nullptr);
  // --estimate_overlap: starts the estimate of the chosen plan beside the transfer;
  // AwaitEstimate (before Commit) records its verdict, true when accepted.
  void StartEstimate(Request& r, base::AdmissionGate::Slot slot, std::vector<int32_t> kept);
  absl::StatusOr<bool> AwaitEstimate(Request& r);
  // After a rejected overlapped estimate: choose again (checking each new plan first)
  // and encode the new choice for a fresh session.
  absl::Status ReplanRejected(grpc::ServerContext* context, Request& r);
  // The request as the pipeline runs it (its current policy).
  pipeline::Request PipelineRequest(const Request& r) const;
  // The payload of the request's current policy (pipeline::Encode): SessionOpen and, for
  // kv / projected, the chunks of the selected cache (none yet when re-planning).
  absl::Status EncodePayload(Request& r);
  // The decision's note on the points the estimate history prices down, or "".
  std::string SetAside(const std::vector<control::OperatingPoint>& points) const;
  // Records one plan's estimate in the request's stats; true when it passes.
  bool RecordEstimate(Request& r, const model::QualityEstimate& e);
  // Adaptive kv / projected: estimates the chosen plan on the scout (the cache in
  // `r.pre`, the selection `kept`) and chooses again while the estimate rejects it: the
  // same selection's other specs, a selection keeping more, or a lossless fallback
  // (AfterRejection); the request may end up in text mode.
  // `rejected`: plans already rejected (the loop then starts by choosing again).
  absl::Status CheckEstimate(grpc::ServerContext* context, Request& r,
                             const std::vector<int32_t>& kept,
                             std::vector<std::string> rejected = {},
                             std::unique_ptr<model::QualityProbe> probe = nullptr);
  // The points the controller may choose after the estimate rejected `r.point`: the same
  // selection's other specs, the same selector keeping more or the whole cache, text or
  // kv's whole cache unquantized (or, for an unsure scout, InsteadOfScout).
  std::function<bool(const control::OperatingPoint&)> AfterRejection(
      const Request& r, const std::vector<std::string>& rejected) const;
  // Chooses again after `rejected`, switching `r` to the new mode and selection (`kept`:
  // its positions, selected again from the prefill's statistics when it keeps more).
  absl::Status ChooseAfterRejection(Request& r, const std::vector<std::string>& rejected,
                                    std::vector<int32_t>& kept);
  // Turns `r` into a text-mode request under its current session id.
  absl::Status SwitchToText(Request& r);
  // The link as the controller sees it now: the ack estimate, or the flags' initial
  // bandwidth and round trip before any.
  control::LinkState Link();
  // Feeds one Transfer's chunk timings (seconds since the request began) to the estimator.
  void UpdateLink(const CloudTransfer::Result& transfer);
  // The cloud's GetInfo, fetched on first use and kept (models and rates do not change
  // while a cloud runs; a failed fetch is retried on the next request). No lock is held
  // across the call, so a hung cloud does not serialise requests behind it.
  absl::StatusOr<kvstream::v1::GetInfoResponse> CloudInfo();
  // FAILED_PRECONDITION unless the cloud maps this edge's scout into `cloud_model`.
  absl::Status CheckProjection(const kvstream::v1::GetInfoResponse& info,
                               const std::string& cloud_model) const;

  std::unique_ptr<model::Model> scout_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  EdgeOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<base::AdmissionGate> gate_;
  std::unique_ptr<net::PeerLimiter> peers_;
  std::unique_ptr<net::TenantLedger> tenants_ = std::make_unique<net::TenantLedger>("requests");
  std::mutex link_mu_;
  control::LinkEstimator link_;
  // --estimate_history: each point's recent share of rejecting estimates, which prices
  // its quality down (control::EstimateHistory).
  control::EstimateHistory estimate_history_;
  // The cloud model's prefill cost (text / scout), fitted to the start-up timings in its
  // GetInfo the first time it is priced, then recalibrated by every answer it prefills.
  control::PrefillCost CloudPrefillCost(const kvstream::v1::ModelInfo& model);
  void ObserveCloudPrefill(const std::string& model, int tokens, double seconds);

  // The scout's prefill cost, plain and with statistics, recalibrated by every request;
  // the cloud models' by cloud model name.
  std::mutex cost_mu_;
  control::PrefillCost prefill_cost_, prefill_stats_cost_;
  std::map<std::string, control::PrefillCost> cloud_prefill_cost_;
  std::shared_ptr<grpc::Channel> channel_;  // to the cloud
  std::unique_ptr<kvstream::v1::CloudService::Stub> cloud_;
  std::mutex info_mu_;
  std::optional<kvstream::v1::GetInfoResponse> info_;
};

}  // namespace kvstream::edge
