#include "common/pipeline/pipeline.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status.h"
#include "common/codec/positions.h"
#include "common/model/projection.h"
#include "common/model/tokenizer.h"

namespace kvstream::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The prompt but its last token, which the receiver feeds first.
int HeadTokens(const model::ChatPrompt& prompt) {
  return static_cast<int>(prompt.tokens.size()) - 1;
}

// The fields every mode's SessionOpen carries.
kvstream::v1::SessionOpen CommonOpen(const Request& request, const std::string& session_id) {
  kvstream::v1::SessionOpen open;
  open.set_session_id(session_id);
  open.set_mode(request.mode);
  open.set_max_tokens(request.max_tokens);
  open.set_temperature(request.temperature);
  open.set_top_p(request.top_p);
  open.set_seed(request.seed);
  if (NamesCloudModel(request.mode)) open.set_model_name(request.cloud_model);
  return open;
}

// A sender's prompt holds the cache's tokens and the last one, which the receiver feeds.
absl::Status CheckPromptLength(const model::ChatPrompt& prompt) {
  if (prompt.tokens.size() >= 2) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("a prompt of ", prompt.tokens.size(), " tokens; expected at least 2"));
}

// kv / projected: what SessionOpen says of the sender's cache, whose slots hold
// `positions`.
void FillCacheOpen(const model::Model& sender, const model::ChatPrompt& prompt,
                   const std::vector<int32_t>& positions, kvstream::v1::SessionOpen& open,
                   const std::vector<uint32_t>& tier_slots = {}) {
  const model::ModelConfig& sc = sender.config();
  open.set_model_fingerprint(sender.fingerprint());
  open.mutable_dims()->set_num_layers(sc.num_layers);
  open.mutable_dims()->set_num_kv_heads(sc.num_kv_heads);
  open.mutable_dims()->set_head_dim(sc.head_dim);
  open.mutable_dims()->set_vocab_size(sc.vocab_size);
  open.mutable_dims()->set_max_position_embeddings(sc.max_position_embeddings);
  open.set_last_token(prompt.tokens.back());
  open.set_num_slots(static_cast<uint32_t>(positions.size()));
  open.set_next_position(static_cast<uint32_t>(HeadTokens(prompt)));
  if (tier_slots.empty()) {
    open.set_kept_positions(codec::EncodePositions(positions));
  } else {
    open.mutable_tier_slots()->Add(tier_slots.begin(), tier_slots.end());
    open.set_kept_positions(codec::EncodePositionRuns(positions, tier_slots));
  }
}

// The chunks of `cache`'s first `num_slots` slots (-1: all) under the request's plan:
// one layer per chunk with layer_chunks, else layers grouped where they fit.
absl::StatusOr<std::vector<kvstream::v1::KvChunk>> EncodeLayers(
    const model::KvCache& cache, int num_slots, const Request& request,
    const std::string& session_id, int layer_begin, int layer_end, uint64_t first_seq,
    const std::vector<uint32_t>& tier_slots = {}) {
  model::ChunkingOptions co;
  co.max_chunk_bytes = request.chunk_bytes;
  co.num_slots = num_slots;
  co.tier_slots = tier_slots;
  co.threads = request.encode_threads;
  if (request.layer_chunks && !tier_slots.empty()) {
    return absl::InvalidArgumentError(
        "a progressive plan (tiers=) sends tier by tier, not a layer per chunk");
  }
  if (!request.layer_chunks) {
    co.layer_begin = layer_begin;
    co.layer_end = layer_end;
    return model::EncodeCache(cache, request.plan, session_id, co, first_seq);
  }
  std::vector<kvstream::v1::KvChunk> out;
  for (int l = layer_begin; l < layer_end; ++l) {
    co.layer_begin = l;
    co.layer_end = l + 1;
    ASSIGN_OR_RETURN(
        std::vector<kvstream::v1::KvChunk> layer,
        model::EncodeCache(cache, request.plan, session_id, co, first_seq + out.size()));
    for (auto& ch : layer) out.push_back(std::move(ch));
  }
  return out;
}

// A progressive plan sends the selection's ranking: it must hold exactly the positions
// sent (the kept ones, or with no selector every one of the `head` cached).
absl::Status CheckRanking(const select::Selection& selection, const Request& request, int head) {
  std::vector<int32_t> ranked = selection.ranked;
  std::sort(ranked.begin(), ranked.end());
  std::vector<int32_t> sent = selection.kept;
  if (!request.selects()) {
    sent.resize(static_cast<size_t>(head));
    std::iota(sent.begin(), sent.end(), 0);
  }
  if (ranked == sent) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("a progressive plan needs the selection's ranking of the ", sent.size(),
                   " positions sent; the ranking holds ", ranked.size(), " others"));
}

// What one mode does on each side. The four instances are stateless.
class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual bool SenderPrefills(const Request& request) const = 0;
  // Fills the mode's part of `payload.open` (the common fields are set) and its chunks.
  virtual absl::Status Fill(const model::Model& sender, const model::PrefillResult* pre,
                            const select::Selection* selection, const model::ChatPrompt& prompt,
                            const Request& request, bool encode_chunks, Payload& payload) const = 0;
  virtual std::unique_ptr<model::CacheAssembler> NewAssembler(const model::Model& answerer,
                                                              const model::Projection* projection,
                                                              const std::string& session_id,
                                                              const CheckedOpen& open) const = 0;
  virtual absl::StatusOr<std::unique_ptr<model::KvCache>> Rebuild(
      model::Model& answerer, const CheckedOpen& open, model::CacheAssembler* assembler,
      const model::Projection* projection, Interrupt interrupt, RebuildTimes& times) const = 0;
};

// kv: the sender's cache (its kept slots) in the answering model's shape.
class CacheStrategy : public Strategy {
 public:
  bool SenderPrefills(const Request&) const override { return true; }

  absl::Status Fill(const model::Model& sender, const model::PrefillResult* pre,
                    const select::Selection* selection, const model::ChatPrompt& prompt,
                    const Request& request, bool encode_chunks, Payload& payload) const override {
    if (pre == nullptr || pre->cache == nullptr || selection == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(ModeName(request.mode), " mode sends the sender's cache; no prefill given"));
    }
    // Progressive: the kept slots tier by tier, most important first (one tier: none).
    select::Tiers tiers;
    if (request.plan.tiers > 0) {
      RETURN_IF_ERROR(CheckRanking(*selection, request, HeadTokens(prompt)));
      tiers = select::SplitTiers(*selection, request.plan.tiers);
    }
    if (tiers.sizes.size() < 2) tiers = {};
    if (!tiers.sizes.empty()) {  // the prefill's cache holds slot p at position p
      ASSIGN_OR_RETURN(payload.kept, pre->cache->Copy(tiers.positions));
    } else if (request.selects()) {
      ASSIGN_OR_RETURN(payload.kept, pre->cache->Copy(selection->kept));
    }
    payload.cache = payload.kept != nullptr ? payload.kept.get() : pre->cache.get();
    if (encode_chunks) {
      ASSIGN_OR_RETURN(payload.chunks,
                       EncodeLayers(*payload.cache, -1, request, payload.open.session_id(), 0,
                                    payload.cache->num_layers(), 0, tiers.sizes));
    }
    FillCacheOpen(sender, prompt, payload.cache->positions(), payload.open, tiers.sizes);
    return absl::OkStatus();
  }

  std::unique_ptr<model::CacheAssembler> NewAssembler(const model::Model& answerer,
                                                      const model::Projection*,
                                                      const std::string& session_id,
                                                      const CheckedOpen& open) const override {
    return std::make_unique<model::CacheAssembler>(answerer, session_id, open.kept,
                                                   open.next_position);
  }

  absl::StatusOr<std::unique_ptr<model::KvCache>> Rebuild(
      model::Model& answerer, const CheckedOpen& open, model::CacheAssembler* assembler,
      const model::Projection* projection, Interrupt, RebuildTimes& times) const override {
    if (assembler == nullptr) return absl::FailedPreconditionError("no chunks were received");
    const auto t = Clock::now();
    ASSIGN_OR_RETURN(std::unique_ptr<model::KvCache> cache,
                     open.tier_slots.empty() ? Whole(*assembler) : Progressive(*assembler, open));
    times.rebuild += Since(t);
    times.slots = cache->size();
    return Map(std::move(cache), answerer, projection, times);
  }

 protected:
  // Every cell must have come.
  static absl::StatusOr<std::unique_ptr<model::KvCache>> Whole(model::CacheAssembler& assembler) {
    if (!assembler.complete()) {
      return absl::InvalidArgumentError(absl::StrCat("Commit with ", assembler.cells_missing(),
                                                     " (layer, slot) cells of the cache not sent"));
    }
    return assembler.Finish();
  }

  // The longest run of leading (most important) slots every layer has, which must hold
  // the first tier, in position order.
  static absl::StatusOr<std::unique_ptr<model::KvCache>> Progressive(
      model::CacheAssembler& assembler, const CheckedOpen& open) {
    const int n = assembler.CompletePrefix();
    if (n < static_cast<int>(open.tier_slots.front())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Commit before the first tier was whole: a progressive session answers from at least "
          "its first tier's ",
          open.tier_slots.front(), " slots in every layer, found the first ", n));
    }
    return assembler.FinishPrefix(n);
  }

  virtual absl::StatusOr<std::unique_ptr<model::KvCache>> Map(std::unique_ptr<model::KvCache> cache,
                                                              const model::Model&,
                                                              const model::Projection*,
                                                              RebuildTimes&) const {
    return cache;
  }
};

// projected: the scout's cache, rebuilt in its own shape and mapped into the answering
// model by the projection.
class ProjectedStrategy : public CacheStrategy {
 public:
  std::unique_ptr<model::CacheAssembler> NewAssembler(const model::Model&,
                                                      const model::Projection* projection,
                                                      const std::string& session_id,
                                                      const CheckedOpen& open) const override {
    if (projection == nullptr) return nullptr;
    const model::ProjectionModel& src = projection->header().source;
    return std::make_unique<model::CacheAssembler>(src.num_layers, src.num_kv_heads, src.head_dim,
                                                   session_id, open.kept, open.next_position);
  }

 protected:
  absl::StatusOr<std::unique_ptr<model::KvCache>> Map(std::unique_ptr<model::KvCache> cache,
                                                      const model::Model& answerer,
                                                      const model::Projection* projection,
                                                      RebuildTimes& times) const override {
    if (projection == nullptr) {
      return absl::FailedPreconditionError("projected mode without a projection");
    }
    const auto t = Clock::now();
    ASSIGN_OR_RETURN(std::unique_ptr<model::KvCache> mapped, projection->Apply(*cache, answerer));
    times.projection += Since(t);
    return mapped;
  }
};

// text: the prompt's ids; the answering model prefills them.
class PromptStrategy : public Strategy {
 public:
  bool SenderPrefills(const Request&) const override { return false; }

  absl::Status Fill(const model::Model&, const model::PrefillResult*, const select::Selection*,
                    const model::ChatPrompt& prompt, const Request&, bool,
                    Payload& payload) const override {
    payload.open.mutable_prompt_tokens()->Add(prompt.tokens.begin(), prompt.tokens.end());
    return absl::OkStatus();
  }

  std::unique_ptr<model::CacheAssembler> NewAssembler(const model::Model&, const model::Projection*,
                                                      const std::string&,
                                                      const CheckedOpen&) const override {
    return nullptr;
  }

  absl::StatusOr<std::unique_ptr<model::KvCache>> Rebuild(
      model::Model& answerer, const CheckedOpen& open, model::CacheAssembler*,
      const model::Projection*, Interrupt interrupt, RebuildTimes& times) const override {
    const auto t = Clock::now();
    model::PrefillOptions po;
    po.interrupt = std::move(interrupt);
    const size_t head = open.prompt.size() - 1;
    if (!open.kept.empty()) {  // scout: the kept positions only
      po.keep_mask.assign(head, 0);
      for (int32_t p : open.kept) po.keep_mask[p] = 1;
    }
    ASSIGN_OR_RETURN(model::PrefillResult pre,
                     answerer.Prefill(absl::MakeConstSpan(open.prompt).subspan(0, head), po));
    times.prefill += Since(t);
    return std::move(pre.cache);
  }
};

// scout: the ids and, with a selector, the positions the scout kept; the answering model
// prefills only those.
class ScoutStrategy : public PromptStrategy {
 public:
  bool SenderPrefills(const Request& request) const override { return request.selects(); }

  absl::Status Fill(const model::Model& sender, const model::PrefillResult* pre,
                    const select::Selection* selection, const model::ChatPrompt& prompt,
                    const Request& request, bool encode_chunks, Payload& payload) const override {
    RETURN_IF_ERROR(
        PromptStrategy::Fill(sender, pre, selection, prompt, request, encode_chunks, payload));
    if (!request.selects()) return absl::OkStatus();
    if (selection == nullptr) {
      return absl::FailedPreconditionError("scout mode with a selector; no selection given");
    }
    payload.open.set_num_slots(static_cast<uint32_t>(selection->kept.size()));
    payload.open.set_kept_positions(codec::EncodePositions(selection->kept));
    return absl::OkStatus();
  }
};

const Strategy* For(Mode mode) {
  static const CacheStrategy kv;
  static const ProjectedStrategy projected;
  static const ScoutStrategy scout;
  static const PromptStrategy text;
  switch (mode) {
    case kvstream::v1::MODE_KV:
      return &kv;
    case kvstream::v1::MODE_PROJECTED:
      return &projected;
    case kvstream::v1::MODE_SCOUT:
      return &scout;
    case kvstream::v1::MODE_TEXT:
      return &text;
    default:
      return nullptr;
  }
}

absl::StatusOr<const Strategy*> Checked(Mode mode) {
  const Strategy* s = For(mode);
  if (s == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mode: expected kv, projected, scout or text to answer in, found ", ModeName(mode)));
  }
  return s;
}

}  // namespace

bool SenderPrefills(const Request& request) {
  const Strategy* s = For(request.mode);
  return s != nullptr && s->SenderPrefills(request);
}

absl::StatusOr<model::PrefillResult> Prefill(
    model::Model& sender, const model::ChatPrompt& prompt, const Request& request,
    Interrupt interrupt,
    std::function<absl::Status(int layer, const model::KvCache& cache)> on_layer) {
  if (on_layer && !request.CanStreamLayers()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layers can be sent during the prefill only for kv or projected without a selector, "
        "found ",
        ModeName(request.mode), " with selector ", select::PolicyName(request.selector)));
  }
  if (request.selects()) {
    return model::PrefillForSelection(sender, prompt.tokens, prompt.spans, request.snapkv_window,
                                      std::move(interrupt));
  }
  RETURN_IF_ERROR(CheckPromptLength(prompt));
  // The whole prompt too: the last row's logits, one token's work, are the quality
  // estimate's first step.
  model::PrefillOptions po;
  po.interrupt = std::move(interrupt);
  po.on_layer = std::move(on_layer);
  po.cache_tokens = HeadTokens(prompt);
  return sender.Prefill(prompt.tokens, po);
}

absl::StatusOr<kvstream::v1::SessionOpen> OpenBeforePrefill(const model::Model& sender,
                                                            const model::ChatPrompt& prompt,
                                                            const Request& request,
                                                            const std::string& session_id) {
  if (!request.CanStreamLayers() || !request.layer_chunks) {
    return absl::FailedPreconditionError(
        "a SessionOpen before the prefill needs kv or projected without a selector, sent a "
        "layer per chunk");
  }
  RETURN_IF_ERROR(CheckPromptLength(prompt));
  kvstream::v1::SessionOpen open = CommonOpen(request, session_id);
  std::vector<int32_t> positions(static_cast<size_t>(HeadTokens(prompt)));
  std::iota(positions.begin(), positions.end(), 0);
  FillCacheOpen(sender, prompt, positions, open);
  return open;
}

absl::StatusOr<std::vector<kvstream::v1::KvChunk>> EncodeLayer(const model::KvCache& cache,
                                                               const model::ChatPrompt& prompt,
                                                               const Request& request,
                                                               const std::string& session_id,
                                                               int layer, uint64_t first_seq) {
  return EncodeLayers(cache, HeadTokens(prompt), request, session_id, layer, layer + 1, first_seq);
}

absl::StatusOr<select::Selection> Select(const model::PrefillResult& pre,
                                         const model::ChatPrompt& prompt, const Request& request) {
  select::PromptSpans spans = prompt.spans;
  spans.num_tokens = HeadTokens(prompt);
  if (request.selects()) {
    select::SelectOptions so;
    so.policy = request.selector;
    so.retention = request.retention;
    so.seed = request.seed;
    return select::Select(pre.stats, spans, so);
  }
  return select::KeepAll(spans);
}

absl::StatusOr<Payload> Encode(const model::Model& sender, const model::PrefillResult* pre,
                               const select::Selection* selection, const model::ChatPrompt& prompt,
                               const Request& request, const std::string& session_id,
                               bool encode_chunks) {
  ASSIGN_OR_RETURN(const Strategy* strategy, Checked(request.mode));
  RETURN_IF_ERROR(CheckPromptLength(prompt));
  Payload payload;
  payload.open = CommonOpen(request, session_id);
  RETURN_IF_ERROR(strategy->Fill(sender, pre, selection, prompt, request, encode_chunks, payload));
  if (pre != nullptr) payload.check = MakeAnswerCheck(*pre, prompt, request);
  return payload;
}

std::optional<kvstream::v1::AnswerCheck> MakeAnswerCheck(const model::PrefillResult& pre,
                                                         const model::ChatPrompt& prompt,
                                                         const Request& request) {
  if (!request.answer_check || request.mode != kvstream::v1::MODE_PROJECTED ||
      pre.last_logits.empty()) {
    return std::nullopt;
  }
  kvstream::v1::AnswerCheck check;
  check.set_expected_token(model::GreedyToken(pre.last_logits));
  check.mutable_prompt_tokens()->Add(prompt.tokens.begin(), prompt.tokens.end());
  return check;
}

std::string NewSessionId() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}() * 0x9E3779B97F4A7C15ull ^
                               static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  return absl::StrFormat("%016x-%08x", salt,
                         static_cast<uint32_t>(counter.fetch_add(1) & 0xffffffffu));
}

std::vector<kvstream::v1::Uplink> UplinkMessages(const Payload& payload, size_t chunks) {
  chunks = std::min(chunks, payload.chunks.size());
  std::vector<kvstream::v1::Uplink> out(chunks + 2);
  *out.front().mutable_open() = payload.open;
  for (size_t i = 0; i < chunks; ++i) *out[i + 1].mutable_chunk() = payload.chunks[i];
  out.back().mutable_commit()->set_num_chunks(chunks);
  if (payload.check) *out.back().mutable_commit()->mutable_check() = *payload.check;
  return out;
}

std::vector<int32_t> StopTokens(const model::Model& answerer, const model::Tokenizer* tokenizer) {
  std::vector<int32_t> stop(answerer.config().eos_token_ids.begin(),
                            answerer.config().eos_token_ids.end());
  if (tokenizer != nullptr) {
    for (int32_t id : model::StopTokens(*tokenizer)) {
      if (std::find(stop.begin(), stop.end(), id) == stop.end()) stop.push_back(id);
    }
  }
  return stop;
}

std::unique_ptr<model::CacheAssembler> NewAssembler(Mode mode, const model::Model& answerer,
                                                    const model::Projection* projection,
                                                    const std::string& session_id,
                                                    const CheckedOpen& open) {
  const Strategy* s = For(mode);
  return s == nullptr ? nullptr : s->NewAssembler(answerer, projection, session_id, open);
}

absl::StatusOr<std::unique_ptr<model::KvCache>> Rebuild(Mode mode, model::Model& answerer,
                                                        const CheckedOpen& open,
                                                        model::CacheAssembler* assembler,
                                                        const model::Projection* projection,
                                                        Interrupt interrupt, RebuildTimes* times) {
  ASSIGN_OR_RETURN(const Strategy* strategy, Checked(mode));
  RebuildTimes local;
  return strategy->Rebuild(answerer, open, assembler, projection, std::move(interrupt),
                           times != nullptr ? *times : local);
}

absl::StatusOr<model::Generation> GenerateChecked(
    model::Model& answerer, std::unique_ptr<model::KvCache>& cache, const CheckedOpen& open,
    const model::SamplingOptions& sampling, Interrupt interrupt,
    const std::function<bool(int32_t)>& on_token, CheckOutcome* outcome,
    const std::function<void(double)>& after_prefill) {
  CheckOutcome local;
  CheckOutcome& out = outcome != nullptr ? *outcome : local;
  if (open.check_token < 0) {
    return model::Generate(answerer, *cache, open.last_token, sampling, on_token);
  }
  out.checked = true;
  auto agrees = [&open](absl::Span<const float> logits) {
    return model::GreedyToken(logits) == open.check_token;
  };
  ASSIGN_OR_RETURN(model::Generation g,
                   model::Generate(answerer, *cache, open.last_token, sampling, on_token, agrees));
  if (g.stop_reason != "rejected") return g;
  out.answered_from_prompt = true;
  cache.reset();  // the projected cache is not needed again: free it before the prefill
  // Text mode's own rebuild: the whole prompt (no kept positions), prefilled.
  CheckedOpen text = open;
  text.kept.clear();
  const auto t = Clock::now();
  ASSIGN_OR_RETURN(cache, Rebuild(kvstream::v1::MODE_TEXT, answerer, text, nullptr, nullptr,
                                  std::move(interrupt), nullptr));
  if (after_prefill) after_prefill(Since(t));
  out.prefill_seconds = Since(t);
  return model::Generate(answerer, *cache, open.last_token, sampling, on_token);
}

model::SamplingOptions Sampling(const CheckedOpen& open, std::vector<int32_t> stop_tokens) {
  model::SamplingOptions s;
  s.max_new_tokens = open.max_new_tokens;
  s.temperature = open.temperature;
  s.top_p = open.top_p;
  s.seed = open.seed;
  s.stop_tokens = std::move(stop_tokens);
  return s;
}

absl::StatusOr<LocalAnswer> AnswerLocally(const Payload& payload, const Receiver& receiver,
                                          size_t chunks) {
  if (receiver.model == nullptr) return absl::InvalidArgumentError("receiver without a model");
  LocalAnswer out;
  std::vector<kvstream::v1::Uplink> sent = UplinkMessages(payload, chunks);
  std::vector<kvstream::v1::Uplink> got(sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    const std::string bytes = sent[i].SerializeAsString();
    out.wire_bytes += bytes.size();
    if (!got[i].ParseFromString(bytes))
      return absl::InternalError("an uplink message did not parse");
  }
  const kvstream::v1::SessionOpen& open = got.front().open();
  ASSIGN_OR_RETURN(CheckedOpen checked, CheckSessionOpen(open, receiver.model->config(),
                                                         receiver.name, receiver.limits));
  std::unique_ptr<model::CacheAssembler> assembler =
      NewAssembler(open.mode(), *receiver.model, receiver.projection, open.session_id(), checked);
  const auto t = Clock::now();  // writing the chunks counts as rebuild, as on the cloud
  for (size_t i = 1; i + 1 < got.size(); ++i) {
    if (assembler == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("a KvChunk in ", ModeName(open.mode()), " mode, which sends no cache"));
    }
    ASSIGN_OR_RETURN(const codec::ChunkMeta meta, assembler->Validate(got[i].chunk()));
    RETURN_IF_ERROR(assembler->AddValidated(got[i].chunk(), meta));
  }
  if (assembler != nullptr) out.times.rebuild += Since(t);
  ASSIGN_OR_RETURN(std::unique_ptr<model::KvCache> cache,
                   Rebuild(open.mode(), *receiver.model, checked, assembler.get(),
                           receiver.projection, nullptr, &out.times));
  out.slots_used = cache->size();  // before the answer's tokens join the cache
  RETURN_IF_ERROR(CheckAnswerCheck(got.back().commit(), open.mode(), receiver.model->config(),
                                   receiver.name, checked));
  ASSIGN_OR_RETURN(model::Generation g, GenerateChecked(*receiver.model, cache, checked,
                                                        Sampling(checked, receiver.stop_tokens),
                                                        nullptr, nullptr, &out.check));
  out.times.prefill += out.check.prefill_seconds;
  out.tokens = std::move(g.tokens);
  out.stop_reason = std::move(g.stop_reason);
  return out;
}

}  // namespace kvstream::pipeline
