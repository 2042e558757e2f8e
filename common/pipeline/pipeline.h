// One request's path, shared by the edge daemon, the cloud daemon and `kvstream eval`:
//
//   sender (edge)     Prefill (+ statistics) -> Select -> Encode          => Payload
//   wire              Uplink{open}, Uplink{chunk}..., Uplink{commit}
//   receiver (cloud)  CheckSessionOpen -> NewAssembler <- chunks -> Rebuild -> Generate
//
// What differs between modes (what the sender runs and puts in SessionOpen, how the
// receiver gets its cache) lives in one strategy object per mode in pipeline.cc, not in
// the services. The daemons carry a Payload over gRPC; AnswerLocally carries it through
// the same serialized messages in process, which is how the evaluator measures exactly
// what the daemons do (tests/e2e/pipeline_test.cc checks the two agree token for token
// and byte for byte).
//
// The services keep what is theirs: admission, deadlines and cancellation (passed in as
// `interrupt`), the quality estimate, re-planning, retries, metrics.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/codec/spec.h"
#include "common/model/chat.h"
#include "common/model/generate.h"
#include "common/model/kv_chunks.h"
#include "common/model/model.h"
#include "common/pipeline/mode.h"
#include "common/pipeline/request.h"
#include "common/pipeline/session_open.h"
#include "common/select/select.h"
#include "kvstream/v1/service.pb.h"

namespace kvstream::model {
class Projection;
class Tokenizer;
}  // namespace kvstream::model

namespace kvstream::pipeline {

using Interrupt = std::function<absl::Status()>;

// Whether the sender runs its model for `request`: it sends its cache (kv, projected) or
// its selection (scout with a selector). Text, and scout without a selector, send ids.
bool SenderPrefills(const Request& request);

// The sender's prefill of the whole prompt; the cache holds every token but the last,
// which the receiver feeds first, and last_logits are the last token's. With attention
// statistics over the whole prompt when the request selects (model::PrefillForSelection);
// a plain prefill otherwise, whose cache is identical.
// `on_layer` (requests that CanStreamLayers only) is called after each layer, on the
// prefill's thread (model::PrefillOptions::on_layer).
absl::StatusOr<model::PrefillResult> Prefill(
    model::Model& sender, const model::ChatPrompt& prompt, const Request& request,
    Interrupt interrupt = nullptr,
    std::function<absl::Status(int layer, const model::KvCache& cache)> on_layer = nullptr);

// The positions (of every prompt token but the last) the request keeps: the selector's
// choice from `pre`'s statistics, or every one.
absl::StatusOr<select::Selection> Select(const model::PrefillResult& pre,
                                         const model::ChatPrompt& prompt, const Request& request);

// What goes on the wire for one request.
struct Payload {
  kvstream::v1::SessionOpen open;
  std::vector<kvstream::v1::KvChunk> chunks;  // kv / projected, unless encoding was deferred
  // kv / projected with a selector or a progressive plan: the kept slots, in the order sent
  std::unique_ptr<model::KvCache> kept;
  const model::KvCache* cache = nullptr;           // kv / projected: the cache that is sent
  std::optional<kvstream::v1::AnswerCheck> check;  // for Commit (MakeAnswerCheck)
};

// The answer check of a projected request that asks for one (Request::answer_check):
// the sender's greedy first answer token, from the logits its prefill computed for the
// prompt's last token, and the whole prompt. Nothing for other requests.
std::optional<kvstream::v1::AnswerCheck> MakeAnswerCheck(const model::PrefillResult& pre,
                                                         const model::ChatPrompt& prompt,
                                                         const Request& request);

// The payload of `request` under `session_id`: its SessionOpen and, when the mode sends
// a cache, the chunks (unless `encode_chunks` is false: a sender that re-plans encodes a
// layer at a time as it sends, from `cache`). `pre` and `selection` are the sender's
// (unused, and may be null, when SenderPrefills is false); `cache` may point into `pre`,
// which must outlive the payload.
absl::StatusOr<Payload> Encode(const model::Model& sender, const model::PrefillResult* pre,
                               const select::Selection* selection, const model::ChatPrompt& prompt,
                               const Request& request, const std::string& session_id,
                               bool encode_chunks = true);

// Sending while prefilling (requests that CanStreamLayers, with layer_chunks): the
// SessionOpen before any model work (the whole cache of the prompt but its last token),
// then each layer's chunks from the cache Prefill's `on_layer` is given; sequence
// numbers from `first_seq`. Together they are exactly what Encode gives after the
// prefill.
absl::StatusOr<kvstream::v1::SessionOpen> OpenBeforePrefill(const model::Model& sender,
                                                            const model::ChatPrompt& prompt,
                                                            const Request& request,
                                                            const std::string& session_id);
absl::StatusOr<std::vector<kvstream::v1::KvChunk>> EncodeLayer(const model::KvCache& cache,
                                                               const model::ChatPrompt& prompt,
                                                               const Request& request,
                                                               const std::string& session_id,
                                                               int layer, uint64_t first_seq);

// A new session id, 25 characters: a per-process random salt and a counter, so ids do
// not repeat within a process and rarely across processes.
std::string NewSessionId();

// The messages a sender writes for `payload`: SessionOpen, its first `chunks` chunks
// (every one by default; fewer: a progressive sender that stopped early), Commit.
std::vector<kvstream::v1::Uplink> UplinkMessages(const Payload& payload, size_t chunks = SIZE_MAX);

// The ids that end an answer: the model's eos ids, then the tokenizer's end-of-turn ids
// (`tokenizer` may be null).
std::vector<int32_t> StopTokens(const model::Model& answerer, const model::Tokenizer* tokenizer);

// The receiver's side. `open` passed CheckSessionOpen against the answering model.

// Where the chunks of a kv / projected session are written: a cache in the answering
// model's shape (kv) or the projection's source shape (projected); null for scout and
// text, whose answering model prefills the prompt itself.
std::unique_ptr<model::CacheAssembler> NewAssembler(Mode mode, const model::Model& answerer,
                                                    const model::Projection* projection,
                                                    const std::string& session_id,
                                                    const CheckedOpen& open);

struct RebuildTimes {
  double prefill = 0;     // scout / text: the answering model's prefill
  double rebuild = 0;     // kv / projected: Finish on the assembler
  double projection = 0;  // projected: mapping into the answering model
  int slots = 0;          // kv / projected: the slots of the cache answered from
};

// The answering model's cache: the assembler's (every cell sent, else INVALID_ARGUMENT;
// a progressive session: the longest leading run of slots every layer has, holding at
// least the first tier, in position order), mapped by `projection` in projected mode; or the
// answering model's prefill of the prompt but its last token (scout: only the kept positions are
// stored and visible).
absl::StatusOr<std::unique_ptr<model::KvCache>> Rebuild(Mode mode, model::Model& answerer,
                                                        const CheckedOpen& open,
                                                        model::CacheAssembler* assembler,
                                                        const model::Projection* projection,
                                                        Interrupt interrupt, RebuildTimes* times);

// What the answer check (Commit.check) found; nothing checked without one.
struct CheckOutcome {
  bool checked = false;
  bool answered_from_prompt = false;  // the check failed
  double prefill_seconds = 0;         // the prompt's prefill after a failed check
};

// Generates the answer from `cache` (model::Generate, `on_token` for each token). With an
// answer check (`open.check_token` >= 0) the first step's greedy token must be the
// sender's; when it is not, nothing is emitted from `cache`: it is freed, the answering
// model prefills `open.prompt` but its last token (`interrupt` as in Rebuild), `cache`
// becomes that prefill's, and the answer comes from it, as in text mode. `after_prefill`
// (may be null) is called with that prefill's seconds before generation starts from it
// (the cloud pads emulated prefill rates there).
absl::StatusOr<model::Generation> GenerateChecked(
    model::Model& answerer, std::unique_ptr<model::KvCache>& cache, const CheckedOpen& open,
    const model::SamplingOptions& sampling, Interrupt interrupt,
    const std::function<bool(int32_t)>& on_token, CheckOutcome* outcome,
    const std::function<void(double)>& after_prefill = nullptr);

// The sampling `open` asks for, ending at `stop_tokens`.
model::SamplingOptions Sampling(const CheckedOpen& open, std::vector<int32_t> stop_tokens);

// The answering side in process.
struct Receiver {
  model::Model* model = nullptr;
  std::string name;                               // for errors
  const model::Projection* projection = nullptr;  // projected mode
  OpenLimits limits;
  std::vector<int32_t> stop_tokens;
};

struct LocalAnswer {
  std::vector<int32_t> tokens;
  std::string stop_reason;
  uint64_t wire_bytes = 0;  // every serialized uplink message, as the edge counts them
  RebuildTimes times;
  int slots_used = 0;  // kv / projected: the cache slots the answer came from
  CheckOutcome check;  // projected with Request::answer_check
};

// Carries `payload` to `receiver` as the daemons do, through serialized Uplink messages
// (each parsed back, every chunk validated), and generates the answer; with `chunks`,
// the sender stops after that many chunks and commits (a progressive transfer cut short).
absl::StatusOr<LocalAnswer> AnswerLocally(const Payload& payload, const Receiver& receiver,
                                          size_t chunks = SIZE_MAX);

}  // namespace kvstream::pipeline
