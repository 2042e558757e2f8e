// kvstream-cloud's CloudService: one Transfer stream per session. It validates the
// SessionOpen against the models it serves, reserves the session's cache in the
// SessionStore, rebuilds the cache from KvChunks (kv mode) or prefills the prompt
// itself (scout: with the edge's keep-mask; text: everything), generates, and streams
// tokens back. GetInfo reports the models, their measured rates and the session load.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "cloud/chunk_applier.h"
#include "cloud/parked_sessions.h"
#include "cloud/session_store.h"
#include "common/base/admission.h"
#include "common/metrics/metrics.h"
#include "common/model/model.h"
#include "common/model/projection.h"
#include "common/model/tokenizer.h"
#include "common/net/auth.h"
#include "common/net/peer_limit.h"
#include "common/net/tenant_ledger.h"
#include "common/net/uplink_frame.h"
#include "common/net/watchdog.h"
#include "kvstream/v1/service.grpc.pb.h"

namespace kvstream::pipeline {
struct CheckOutcome;
}  // namespace kvstream::pipeline

namespace kvstream::model {
class CacheAssembler;
}

namespace kvstream::cloud {

struct ServedModel {
  std::string name;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::Tokenizer> tokenizer;  // null when the directory has none
  std::vector<int32_t> stop_tokens;             // eos ids and <|im_end|>
  double prefill_tokens_per_second = 0;         // measured at load (or emulated)
  double decode_tokens_per_second = 0;
  // (tokens, seconds) of the start-up prefill probes, shortest first; empty when not
  // measured or emulated.
  std::vector<std::pair<int, double>> prefill_timings;
};

// Loads `dir` as model `name`, and measures its prefill time at `probe_tokens` / 2 and
// `probe_tokens` * 2 tokens and its decode rate over 16 steps (0: skip measuring).
absl::StatusOr<ServedModel> LoadServedModel(const std::string& name, const std::string& dir,
                                            const model::RuntimeOptions& runtime,
                                            int probe_tokens = 128);

// A projection from an edge's scout into served model `target` (an index into the
// models), with its mapping rate measured at load.
struct ServedProjection {
  std::unique_ptr<model::Projection> projection;
  size_t target = 0;
  double tokens_per_second = 0;
};

// Loads `path` and matches it to the served model it was fitted for (FAILED_PRECONDITION
// naming the fingerprints when none is); measures its rate on 256 slots unless
// `measure` is false.
absl::StatusOr<ServedProjection> LoadServedProjection(const std::string& path,
                                                      const std::vector<ServedModel>& models,
                                                      bool measure);

using UplinkFrame = net::UplinkFrame;

struct CloudOptions {
  uint32_t max_sessions = 16;
  int max_streams_per_peer = 0;  // Transfer streams one client address holds (0: any)
  uint64_t cache_budget_bytes = 1ull << 30;
  uint32_t max_new_tokens = 512;     // cap on SessionOpen.max_tokens
  uint32_t default_new_tokens = 32;  // when SessionOpen.max_tokens is 0
  // Emulate a slower (larger) model: prefill and decode are padded with sleep to these
  // rates in tokens/s (0: run at the real rate). GetInfo then reports the emulated rates.
  double emulate_prefill_tokens_per_second = 0;
  double emulate_decode_tokens_per_second = 0;
  // Admission control: a session holds one of `model_workers` slots from Commit through
  // generation (rebuild or prefill, then decode); up to `max_queued` wait for one.
  int model_workers = 1;
  int max_queued = 32;
  // A Transfer stream must send SessionOpen within `open_timeout_seconds`, and an open
  // session must send its next message within `idle_timeout_seconds` until Commit; else
  // it is cancelled and its slot freed (<= 0: no limit).
  double open_timeout_seconds = 10;
  double idle_timeout_seconds = 30;
  // A kv / projected session whose stream breaks before Commit is kept this long, with its
  // chunks and reservations, for the sender to resume (0: not kept).
  double resume_window_seconds = 10;
  // Chunk payloads stay in the gRPC buffers they arrived in, and the cache is written from
  // there (UplinkFrame); false copies each into its message first, as protobuf parsing
  // does (for comparison). Process-wide: the last service constructed sets it.
  bool zero_copy_uplink = true;
  // Edges must present a token from this set (null: no authentication).
  std::shared_ptr<net::TokenAuthenticator> auth;
};

class CloudService final : public kvstream::v1::CloudService::Service {
 public:
  CloudService(std::vector<ServedModel> models, std::vector<ServedProjection> projections,
               const CloudOptions& options, metrics::MetricsServer& metrics);
  ~CloudService() override;

  // Transfer's handler: it reads the uplink as UplinkFrames (a chunk's payload left in the
  // slices it came in), registered in place of the generated one.
  grpc::Status ServeTransfer(grpc::ServerContext* context,
                             grpc::ServerReaderWriter<kvstream::v1::Downlink, UplinkFrame>* stream);
  grpc::Status GetInfo(grpc::ServerContext* context, const kvstream::v1::GetInfoRequest* request,
                       kvstream::v1::GetInfoResponse* response) override;

  const SessionStore& sessions() const { return *sessions_; }
  // GetInfoResponse.model_card: a digest of the served models and projections.
  const std::string& model_card() const { return model_card_; }
  // Drain: sessions waiting for a model worker, and later ones, get UNAVAILABLE.
  void Drain();

 private:
  struct Metrics;
  struct Session;
  using Stream = grpc::ServerReaderWriter<kvstream::v1::Downlink, UplinkFrame>;
  // SessionOpen through Commit, then Answer. `session` may be replaced by a parked one
  // (resume), and is marked for parking when the stream breaks before Commit.
  absl::Status RunSession(grpc::ServerContext* context, Stream* stream,
                          std::unique_ptr<Session>& session);
  // A new session (Open) or a parked one taken back (SessionOpen.resume).
  absl::Status Attach(grpc::ServerContext* context, const kvstream::v1::SessionOpen& open,
                      std::unique_ptr<Session>& session);
  // Chunks until Commit; `committed_chunks` is the count the Commit states. Returns
  // once every accepted chunk is applied.
  absl::Status ReceiveChunks(grpc::ServerContext* context, Stream* stream, Session& s,
                             net::StreamWatchdog::Watch& watch, uint64_t& committed_chunks);
  // The reading half: accepts, queues and acknowledges each chunk.
  absl::Status ReadChunks(grpc::ServerContext* context, Stream* stream, Session& s,
                          net::StreamWatchdog::Watch& watch, uint64_t& committed_chunks,
                          ChunkApplier& applier);
  // Chunks until Commit (or a progressive session's deadline), then the answer.
  absl::Status ReceiveAndAnswer(grpc::ServerContext* context, Stream* stream, Session& s,
                                net::StreamWatchdog::Watch& watch);
  // The next uplink message: from the stream, or from a progressive session's reader,
  // which reports kLate at the session's deadline.
  enum class NextUplink { kMessage, kClosed, kLate };
  NextUplink ReadNext(Stream* stream, Session& s, bool late, UplinkFrame& up);
  // Whether every layer holds the first tier's slots (once queued chunks are applied).
  absl::StatusOr<bool> FirstTierHeld(Session& s, ChunkApplier& applier);
  // A progressive session answers without Commit: what arrived counts as committed.
  absl::Status AnswerEarly(Stream* stream, Session& s, uint64_t& committed_chunks);
  // Downlink Stop: the edge sends nothing more on this stream and half-closes.
  static void SendStop(Stream* stream, absl::string_view reason);
  // Checks a chunk's place in the sequence: true for the next new one (now counted),
  // false for a re-sent one already accepted.
  absl::StatusOr<bool> AcceptChunk(const kvstream::v1::KvChunk& chunk, Session& s);
  // Validates an accepted chunk (header, CRC, positions) and queues it to be written into
  // the session's cache on the applier's thread.
  absl::Status QueueChunk(UplinkFrame frame, Session& s, ChunkApplier& applier);
  // Bytes of accepted chunks waiting to be applied before the reader stops taking more.
  static constexpr uint64_t kMaxQueuedChunkBytes = 32ull << 20;
  // The stream broke `when`: CANCELLED or DEADLINE_EXCEEDED, and marks `s` for parking.
  absl::Status Broken(grpc::ServerContext* context, Session& s, absl::string_view when);
  // A model worker, the cache, and the answer streamed back.
  absl::Status Answer(grpc::ServerContext* context, Stream* stream, Session& s);
  // The answer check's outcome in the session's stats, metrics and log.
  void RecordCheck(const pipeline::CheckOutcome& check, Session& s);
  absl::Status Open(const kvstream::v1::SessionOpen& open, Session& session);
  // Projected mode: finds the projection from the sender's model into `s.served`.
  absl::Status OpenProjected(const kvstream::v1::SessionOpen& open, Session& session);
  // The cache the session generates from once its chunks (or prompt) are in
  // (pipeline::Rebuild), with its stage times recorded.
  absl::StatusOr<std::unique_ptr<model::KvCache>> BuildCache(grpc::ServerContext* context,
                                                             Session& s);

  std::vector<ServedModel> models_;
  std::vector<ServedProjection> projections_;
  std::string model_card_;
  CloudOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<SessionStore> sessions_;
  std::unique_ptr<net::TenantLedger> tenants_ = std::make_unique<net::TenantLedger>();
  std::unique_ptr<base::AdmissionGate> gate_;
  std::unique_ptr<net::PeerLimiter> peers_;
  std::unique_ptr<net::StreamWatchdog> watchdog_;
  // Last: parked sessions hold leases on `sessions_` and `tenants_`.
  std::unique_ptr<ParkedSessions<Session>> parked_;
};

}  // namespace kvstream::cloud
