// The request pipeline in process, on the committed tiny models: each mode's payload, the
// receiver's checks and rebuild, and the oracles that tie the modes together.
#include "common/pipeline/pipeline.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "common/base/status.h"
#include "common/codec/positions.h"
#include "common/eval/tasks.h"
#include "common/model/projection.h"
#include "common/model/tokenizer.h"
#include "tests/support/tasks.h"

namespace kvstream::pipeline {
namespace {

constexpr char kScout[] = "testdata/models-2k/scout";
constexpr char kLarge[] = "testdata/models-2k/large";
constexpr char kProjection[] = "testdata/projections/scout_to_large_2k.safetensors";

class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::SetComputeThreads(1);
    const model::RuntimeOptions runtime;
    scout_ = model::Model::Load(kScout, runtime).value().release();
    large_ = model::Model::Load(kLarge, runtime).value().release();
    tokenizer_ = model::Tokenizer::Load(std::string(kScout) + "/tokenizer.json").value().release();
    projection_ = model::Projection::Load(kProjection).value().release();
    // A single-hop question among 8 records, as the models were trained on.
    example_ = new eval::Example(testing::SingleHopExamples(*tokenizer_, 8, 1, 4242).at(0));
    prompt_ = new model::ChatPrompt(
        model::BuildQaPrompt(*tokenizer_, example_->context, example_->question,
                             {"Answer with the value from the context."})
            .value());
  }
  static void TearDownTestSuite() {
    delete example_;
    delete prompt_;
    delete projection_;
    delete tokenizer_;
    delete large_;
    delete scout_;
  }

  static Request Make(Mode mode, const char* spec = "raw",
                      select::Policy selector = select::Policy::kFull, double retention = 1) {
    Request r;
    r.mode = mode;
    r.plan = codec::ParsePlan(spec).value();
    r.selector = selector;
    r.retention = retention;
    r.cloud_model = mode == kvstream::v1::MODE_KV ? "" : "large";
    r.max_tokens = 6;
    r.top_p = 1;
    return r;
  }

  // The sender's side for `r` (the scout sends); `pre` receives its prefill.
  static absl::StatusOr<Payload> Send(const Request& r, model::PrefillResult& pre) {
    select::Selection sel;
    if (SenderPrefills(r)) {
      ASSIGN_OR_RETURN(pre, Prefill(*scout_, *prompt_, r));
      ASSIGN_OR_RETURN(sel, Select(pre, *prompt_, r));
    }
    return Encode(*scout_, SenderPrefills(r) ? &pre : nullptr, &sel, *prompt_, r, NewSessionId());
  }

  // The answering side in process for a request in `mode`.
  static Receiver To(model::Model& answerer, Mode mode) {
    Receiver to;
    to.model = &answerer;
    to.name = &answerer == large_ ? "large" : "scout";
    to.projection = mode == kvstream::v1::MODE_PROJECTED ? projection_ : nullptr;
    to.stop_tokens = StopTokens(answerer, tokenizer_);
    return to;
  }

  // The sender's side for `r`, then the receiver's in process.
  static absl::StatusOr<LocalAnswer> Run(const Request& r, model::Model& answerer,
                                         Payload* kept = nullptr) {
    model::PrefillResult pre;
    ASSIGN_OR_RETURN(Payload payload, Send(r, pre));
    absl::StatusOr<LocalAnswer> a = AnswerLocally(payload, To(answerer, r.mode));
    if (kept != nullptr) {
      kept->open = payload.open;
      kept->chunks = payload.chunks;
    }
    return a;
  }

  static model::Model* scout_;
  static model::Model* large_;
  static model::Tokenizer* tokenizer_;
  static model::Projection* projection_;
  static model::ChatPrompt* prompt_;
  static eval::Example* example_;
};

model::Model* PipelineTest::scout_ = nullptr;
model::Model* PipelineTest::large_ = nullptr;
model::Tokenizer* PipelineTest::tokenizer_ = nullptr;
model::Projection* PipelineTest::projection_ = nullptr;
model::ChatPrompt* PipelineTest::prompt_ = nullptr;
eval::Example* PipelineTest::example_ = nullptr;

// The evaluator shares one statistics prefill among its variants, where the daemon runs
// a plain prefill for a request without a selector: the two caches must be the same.
TEST_F(PipelineTest, StatisticsPrefillLeavesTheSameCacheAsThePlainOne) {
  auto plain = Prefill(*scout_, *prompt_, Make(kvstream::v1::MODE_KV));
  auto stats =
      Prefill(*scout_, *prompt_, Make(kvstream::v1::MODE_KV, "raw", select::Policy::kQ2C, 0.5));
  ASSERT_TRUE(plain.ok() && stats.ok()) << plain.status() << stats.status();
  EXPECT_EQ(plain->stats.num_tokens, 0);
  EXPECT_EQ(stats->stats.num_tokens, static_cast<int>(prompt_->tokens.size()));
  ASSERT_EQ(plain->cache->size(), static_cast<int>(prompt_->tokens.size()) - 1);
  ASSERT_EQ(stats->cache->size(), plain->cache->size());
  EXPECT_EQ(stats->cache->positions(), plain->cache->positions());
  EXPECT_EQ(stats->last_logits, plain->last_logits);
  const model::ModelConfig& c = scout_->config();
  const size_t n = static_cast<size_t>(c.num_kv_heads) * plain->cache->size() * c.head_dim;
  std::vector<float> ak(n), av(n), bk(n), bv(n);
  for (int l = 0; l < c.num_layers; ++l) {
    const int slots = plain->cache->size();
    ASSERT_TRUE(plain->cache->ExportLayer(l, 0, slots, ak.data(), av.data()).ok());
    ASSERT_TRUE(stats->cache->ExportLayer(l, 0, slots, bk.data(), bv.data()).ok());
    EXPECT_EQ(std::memcmp(ak.data(), bk.data(), n * sizeof(float)), 0) << "keys, layer " << l;
    EXPECT_EQ(std::memcmp(av.data(), bv.data(), n * sizeof(float)), 0) << "values, layer " << l;
  }
}

// Lossless kv from the scout to the scout answers exactly what text mode does.
TEST_F(PipelineTest, LosslessKvAnswersAsTextDoes) {
  auto kv = Run(Make(kvstream::v1::MODE_KV), *scout_);
  Request text = Make(kvstream::v1::MODE_TEXT);
  auto t = Run(text, *scout_);
  ASSERT_TRUE(kv.ok() && t.ok()) << kv.status() << t.status();
  ASSERT_FALSE(kv->tokens.empty());
  EXPECT_EQ(kv->tokens, t->tokens);
  EXPECT_EQ(eval::ExactMatch(tokenizer_->Decode(kv->tokens, true).value(), example_->answers), 1)
      << tokenizer_->Decode(kv->tokens, true).value();
  EXPECT_GT(kv->times.rebuild, 0);
  EXPECT_GT(t->times.prefill, 0);
}

TEST_F(PipelineTest, EachModeCarriesWhatItSaysAndAnswers) {
  Payload kv_open, scout_open, text_open;
  auto kv = Run(Make(kvstream::v1::MODE_KV, "int4", select::Policy::kQ2C, 0.5), *scout_, &kv_open);
  auto scout =
      Run(Make(kvstream::v1::MODE_SCOUT, "raw", select::Policy::kQ2C, 0.5), *large_, &scout_open);
  auto text = Run(Make(kvstream::v1::MODE_TEXT), *large_, &text_open);
  auto projected = Run(Make(kvstream::v1::MODE_PROJECTED, "int8"), *large_);
  for (auto* a : {&kv, &scout, &text, &projected}) {
    ASSERT_TRUE(a->ok()) << a->status();
    EXPECT_FALSE((*a)->tokens.empty());
  }
  // kv: the kept slots' cache, no ids; scout: the ids and the same kept positions.
  EXPECT_GT(kv_open.chunks.size(), 0u);
  EXPECT_EQ(kv_open.open.prompt_tokens_size(), 0);
  EXPECT_EQ(kv_open.open.model_fingerprint(), scout_->fingerprint());
  EXPECT_LT(kv_open.open.num_slots(), prompt_->tokens.size() - 1);
  EXPECT_EQ(scout_open.open.kept_positions(), kv_open.open.kept_positions());
  EXPECT_EQ(scout_open.open.prompt_tokens_size(), static_cast<int>(prompt_->tokens.size()));
  EXPECT_TRUE(scout_open.chunks.empty());
  EXPECT_EQ(scout_open.open.model_name(), "large");
  EXPECT_TRUE(text_open.open.kept_positions().empty());
  EXPECT_GT(projected->times.projection, 0);
  // Wire bytes are the serialized messages: open, chunks, commit.
  uint64_t bytes = 0;
  Payload p;
  p.open = kv_open.open;
  p.chunks = kv_open.chunks;
  for (const kvstream::v1::Uplink& u : UplinkMessages(p)) bytes += u.ByteSizeLong();
  EXPECT_EQ(kv->wire_bytes, bytes);
  EXPECT_GT(kv->wire_bytes, text->wire_bytes);
  EXPECT_GT(scout->wire_bytes, text->wire_bytes + scout_open.open.kept_positions().size());
}

TEST_F(PipelineTest, ErrorsNameWhatWasExpected) {
  Request kv = Make(kvstream::v1::MODE_KV);
  kv.chunk_bytes = 1024;
  auto no_prefill = Encode(*scout_, nullptr, nullptr, *prompt_, kv, "s");
  EXPECT_EQ(no_prefill.status().code(), absl::StatusCode::kFailedPrecondition);
  Request adaptive = kv;
  adaptive.mode = kvstream::v1::MODE_ADAPTIVE;
  auto a = Encode(*scout_, nullptr, nullptr, *prompt_, adaptive, "s");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("found adaptive"), std::string::npos) << a.status();
  // A cache missing a layer's chunks is refused at rebuild, as at Commit on the cloud.
  auto pre = Prefill(*scout_, *prompt_, kv);
  ASSERT_TRUE(pre.ok());
  auto sel = Select(*pre, *prompt_, kv);
  auto payload = Encode(*scout_, &*pre, &*sel, *prompt_, kv, NewSessionId());
  ASSERT_TRUE(payload.ok() && payload->chunks.size() > 1) << payload.status();
  auto checked = CheckSessionOpen(payload->open, scout_->config(), "scout", {});
  ASSERT_TRUE(checked.ok()) << checked.status();
  auto assembler = NewAssembler(kv.mode, *scout_, nullptr, payload->open.session_id(), *checked);
  ASSERT_NE(assembler, nullptr);
  ASSERT_TRUE(assembler->Add(payload->chunks.front()).ok());
  auto cache = Rebuild(kv.mode, *scout_, *checked, assembler.get(), nullptr, nullptr, nullptr);
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cache.status().message().find("cells of the cache not sent"), std::string::npos)
      << cache.status();
  EXPECT_EQ(NewAssembler(kvstream::v1::MODE_TEXT, *scout_, nullptr, "s", *checked), nullptr);
}

// The answer check of projected mode: the scout's first answer token and the prompt
// travel in Commit. When the large model's first token from the projected cache agrees,
// the answer is the projected one; when it does not, the answer is exactly text mode's.
TEST_F(PipelineTest, AnswerCheckKeepsTheProjectedAnswerOrAnswersAsTextDoes) {
  Request r = Make(kvstream::v1::MODE_PROJECTED, "int8");
  auto unchecked = Run(r, *large_);
  auto text = Run(Make(kvstream::v1::MODE_TEXT), *large_);
  ASSERT_TRUE(unchecked.ok() && text.ok()) << unchecked.status() << text.status();
  EXPECT_FALSE(unchecked->check.checked);
  r.answer_check = true;
  model::PrefillResult pre;
  auto payload = Send(r, pre);
  ASSERT_TRUE(payload.ok() && payload->check.has_value()) << payload.status();
  const auto& l = pre.last_logits;
  const int32_t scout_first =
      static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  EXPECT_EQ(payload->check->expected_token(), scout_first);
  EXPECT_EQ(std::vector<int32_t>(payload->check->prompt_tokens().begin(),
                                 payload->check->prompt_tokens().end()),
            prompt_->tokens);
  const Receiver to = To(*large_, r.mode);
  auto checked = AnswerLocally(*payload, to);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_TRUE(checked->check.checked);
  ASSERT_FALSE(unchecked->tokens.empty());
  // On this question both models start with the same token: the projected answer stands.
  EXPECT_EQ(unchecked->tokens.front(), scout_first);
  EXPECT_FALSE(checked->check.answered_from_prompt);
  EXPECT_EQ(checked->tokens, unchecked->tokens);
  // The sender expecting another first token: the answer is text mode's.
  payload->check->set_expected_token((scout_first + 1) % large_->config().vocab_size);
  auto fell_back = AnswerLocally(*payload, to);
  ASSERT_TRUE(fell_back.ok()) << fell_back.status();
  EXPECT_TRUE(fell_back->check.answered_from_prompt);
  EXPECT_GT(fell_back->check.prefill_seconds, 0);
  EXPECT_EQ(fell_back->tokens, text->tokens);
  EXPECT_GT(fell_back->wire_bytes, unchecked->wire_bytes + prompt_->tokens.size());
}

// A check the receiver cannot use is refused, saying what was expected.
TEST_F(PipelineTest, AnswerCheckIsRefusedOutsideProjectedModeOrWithoutThePrompt) {
  const int vocab = large_->config().vocab_size;
  Request r = Make(kvstream::v1::MODE_PROJECTED, "int8");
  r.answer_check = true;
  model::PrefillResult pre;
  auto payload = Send(r, pre);
  ASSERT_TRUE(payload.ok() && payload->check) << payload.status();
  auto open = CheckSessionOpen(payload->open, large_->config(), "large", {});
  ASSERT_TRUE(open.ok()) << open.status();
  kvstream::v1::Commit commit;
  *commit.mutable_check() = *payload->check;
  CheckedOpen good = *open;
  ASSERT_TRUE(CheckAnswerCheck(commit, r.mode, large_->config(), "large", good).ok());
  EXPECT_EQ(good.check_token, payload->check->expected_token());
  EXPECT_EQ(good.prompt, prompt_->tokens);
  auto refused = [&](const kvstream::v1::Commit& c, kvstream::v1::Mode mode) {
    CheckedOpen o = *open;
    const absl::Status st = CheckAnswerCheck(c, mode, large_->config(), "large", o);
    EXPECT_EQ(o.check_token, -1);
    return st.code() == absl::StatusCode::kInvalidArgument ? std::string(st.message()) : "";
  };
  EXPECT_NE(refused(commit, kvstream::v1::MODE_KV)
                .find("only in a projected session, found one "
                      "in a kv session"),
            std::string::npos);
  kvstream::v1::Commit c = commit;
  c.mutable_check()->set_expected_token(vocab);
  EXPECT_NE(refused(c, r.mode).find("expected_token[0] is " + std::to_string(vocab)),
            std::string::npos);
  c = commit;
  c.mutable_check()->mutable_prompt_tokens()->RemoveLast();
  EXPECT_NE(refused(c, r.mode).find("expected the whole prompt"), std::string::npos);
  c = commit;
  c.mutable_check()->clear_prompt_tokens();
  EXPECT_NE(refused(c, r.mode).find("found 0"), std::string::npos);
  c = commit;
  c.mutable_check()->set_prompt_tokens(c.check().prompt_tokens_size() - 1, open->last_token + 1);
  EXPECT_NE(refused(c, r.mode).find("ending with last_token"), std::string::npos);
  c = commit;
  c.mutable_check()->set_prompt_tokens(0, -3);
  EXPECT_NE(refused(c, r.mode).find("prompt_tokens[0] is -3"), std::string::npos);
  // Without a check, nothing changes; a kv request asking for one gets none.
  CheckedOpen none = *open;
  EXPECT_TRUE(
      CheckAnswerCheck(kvstream::v1::Commit(), r.mode, large_->config(), "large", none).ok());
  EXPECT_EQ(none.check_token, -1);
  Request kv = Make(kvstream::v1::MODE_KV, "int8");
  kv.answer_check = true;
  EXPECT_FALSE(MakeAnswerCheck(pre, *prompt_, kv).has_value());
}

// Progressive sending (a plan with tiers): every tier sent answers exactly as the plan
// without tiers; a transfer cut after the first tiers answers from those slots, the
// most important ones by the selector, and carries only the bytes it sent.
TEST_F(PipelineTest, ProgressiveAnswersFromTheTiersSentAndWhollyAsWithoutTiers) {
  const Request plain = Make(kvstream::v1::MODE_KV, "int4", select::Policy::kQ2C, 1);
  const Request tiered = Make(kvstream::v1::MODE_KV, "int4,tiers=4", select::Policy::kQ2C, 1);
  EXPECT_FALSE(tiered.CanStreamLayers());
  auto pre = Prefill(*scout_, *prompt_, tiered);
  ASSERT_TRUE(pre.ok()) << pre.status();
  const select::Selection sel = Select(*pre, *prompt_, tiered).value();
  auto payload = Encode(*scout_, &*pre, &sel, *prompt_, tiered, NewSessionId());
  ASSERT_TRUE(payload.ok()) << payload.status();
  const kvstream::v1::SessionOpen& open = payload->open;
  ASSERT_EQ(open.tier_slots_size(), 4);
  const select::Tiers tiers = select::SplitTiers(sel, 4);
  EXPECT_EQ(std::vector<uint32_t>(open.tier_slots().begin(), open.tier_slots().end()), tiers.sizes);
  EXPECT_EQ(payload->cache->positions(), tiers.positions);
  // Whole: the same answer as without tiers.
  Receiver to;
  to.model = scout_;
  to.name = "scout";
  to.stop_tokens = StopTokens(*scout_, tokenizer_);
  auto whole = AnswerLocally(*payload, to);
  auto untiered = Run(plain, *scout_);
  ASSERT_TRUE(whole.ok() && untiered.ok()) << whole.status() << untiered.status();
  EXPECT_EQ(whole->tokens, untiered->tokens);
  EXPECT_EQ(whole->slots_used, static_cast<int>(prompt_->tokens.size()) - 1);
  // Cut after two tiers: those slots, and the bytes of what was sent.
  const uint32_t two = tiers.sizes[0] + tiers.sizes[1];
  size_t sent = 0;
  while (sent < payload->chunks.size() && payload->chunks[sent].token_begin() < two) ++sent;
  ASSERT_LT(sent, payload->chunks.size());
  auto cut = AnswerLocally(*payload, to, sent);
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_EQ(cut->slots_used, static_cast<int>(two));
  EXPECT_FALSE(cut->tokens.empty());
  uint64_t bytes = 0;
  for (const kvstream::v1::Uplink& u : UplinkMessages(*payload, sent)) bytes += u.ByteSizeLong();
  EXPECT_EQ(cut->wire_bytes, bytes);
  EXPECT_LT(cut->wire_bytes, whole->wire_bytes);
  // The receiver's cache holds exactly the first two tiers' positions, in prompt order.
  auto checked = CheckSessionOpen(open, scout_->config(), "scout", {});
  ASSERT_TRUE(checked.ok()) << checked.status();
  auto assembler = NewAssembler(plain.mode, *scout_, nullptr, open.session_id(), *checked);
  for (size_t i = 0; i < sent; ++i) ASSERT_TRUE(assembler->Add(payload->chunks[i]).ok());
  RebuildTimes times;
  auto cache = Rebuild(plain.mode, *scout_, *checked, assembler.get(), nullptr, nullptr, &times);
  ASSERT_TRUE(cache.ok()) << cache.status();
  std::vector<int32_t> want(tiers.positions.begin(), tiers.positions.begin() + two);
  std::sort(want.begin(), want.end());
  EXPECT_EQ((*cache)->positions(), want);
  EXPECT_EQ(times.slots, static_cast<int>(two));
  // Projected mode rebuilds the scout's cache the same way before mapping it: the whole
  // tiered transfer answers as the plan without tiers.
  auto projected =
      Run(Make(kvstream::v1::MODE_PROJECTED, "int8,tiers=3", select::Policy::kQ2C, 1), *large_);
  auto projected_plain =
      Run(Make(kvstream::v1::MODE_PROJECTED, "int8", select::Policy::kQ2C, 1), *large_);
  ASSERT_TRUE(projected.ok() && projected_plain.ok())
      << projected.status() << projected_plain.status();
  EXPECT_EQ(projected->tokens, projected_plain->tokens);
  EXPECT_EQ(projected->slots_used, whole->slots_used);
  // Nothing of the first tier: refused.
  auto none = AnswerLocally(*payload, to, 0);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("Commit before the first tier was whole"),
            std::string::npos)
      << none.status();
}

TEST_F(PipelineTest, SessionOpenTiersMustSplitTheSlots) {
  const Request tiered = Make(kvstream::v1::MODE_KV, "int8,tiers=3", select::Policy::kQ2C, 0.5);
  auto pre = Prefill(*scout_, *prompt_, tiered);
  ASSERT_TRUE(pre.ok()) << pre.status();
  const select::Selection sel = Select(*pre, *prompt_, tiered).value();
  auto payload = Encode(*scout_, &*pre, &sel, *prompt_, tiered, NewSessionId());
  ASSERT_TRUE(payload.ok()) << payload.status();
  ASSERT_TRUE(CheckSessionOpen(payload->open, scout_->config(), "scout", {}).ok());
  auto refused = [&](const kvstream::v1::SessionOpen& open, const std::string& want) {
    auto st = CheckSessionOpen(open, scout_->config(), "scout", {}).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << want;
    EXPECT_NE(st.message().find(want), std::string::npos) << st;
  };
  kvstream::v1::SessionOpen open = payload->open;
  open.set_tier_slots(0, open.tier_slots(0) + 1);
  refused(open, "expected 2..64 non-empty tiers summing to num_slots");
  open = payload->open;
  open.clear_tier_slots();
  open.add_tier_slots(open.num_slots());
  refused(open, "found 1 tiers summing to");
  open = payload->open;
  open.clear_tier_slots();  // the runs read as one list, whose gaps run past the prompt
  refused(open, "SessionOpen.kept_positions: positions: position");
  open = payload->open;
  open.set_mode(kvstream::v1::MODE_SCOUT);
  open.add_prompt_tokens(1);
  open.add_prompt_tokens(2);
  refused(open, "progressive sending is for kv and projected sessions");
  open = payload->open;
  open.set_answer_after_seconds(-1);
  refused(open, "answer_after_seconds: expected 0, or 0..3600 seconds");
  open.set_answer_after_seconds(1e12);
  refused(open, "found 1e+12");
  open.set_answer_after_seconds(0.5);
  ASSERT_TRUE(CheckSessionOpen(open, scout_->config(), "scout", {}).ok());
  open.clear_tier_slots();
  refused(open, "without tier_slots");
}

TEST_F(PipelineTest, SessionIdsHaveOneLengthAndDoNotRepeat) {
  const std::string a = NewSessionId(), b = NewSessionId();
  EXPECT_EQ(a.size(), 25u);
  EXPECT_EQ(b.size(), a.size());
  EXPECT_NE(a, b);
}

// Sending while prefilling: the SessionOpen made before the prefill and the chunks each
// layer's callback encodes (on the cache as it is being built) are byte for byte what
// Encode gives after the whole prefill, for kv and projected, raw and compressed.
TEST_F(PipelineTest, LayersEncodedDuringThePrefillAreTheChunksEncodedAfterIt) {
  for (const auto& [mode, spec] : {std::pair<Mode, const char*>{kvstream::v1::MODE_KV, "raw"},
                                   {kvstream::v1::MODE_KV, "int4,L0=f16"},
                                   {kvstream::v1::MODE_PROJECTED, "int8"}}) {
    SCOPED_TRACE(absl::StrCat(ModeName(mode), " ", spec));
    Request r = Make(mode, spec);
    r.layer_chunks = true;
    ASSERT_TRUE(r.CanStreamLayers());
    const std::string id = NewSessionId();
    auto open = OpenBeforePrefill(*scout_, *prompt_, r, id);
    ASSERT_TRUE(open.ok()) << open.status();
    std::vector<kvstream::v1::KvChunk> streamed;
    std::vector<int> layers;
    auto on_layer = [&](int layer, const model::KvCache& cache) -> absl::Status {
      layers.push_back(layer);
      ASSIGN_OR_RETURN(auto chunks, EncodeLayer(cache, *prompt_, r, id, layer, streamed.size()));
      for (auto& c : chunks) streamed.push_back(std::move(c));
      return absl::OkStatus();
    };
    auto pre = Prefill(*scout_, *prompt_, r, nullptr, on_layer);
    ASSERT_TRUE(pre.ok()) << pre.status();
    std::vector<int> every(scout_->config().num_layers);
    std::iota(every.begin(), every.end(), 0);
    EXPECT_EQ(layers, every);
    const select::Selection all = Select(*pre, *prompt_, r).value();
    auto after = Encode(*scout_, &*pre, &all, *prompt_, r, id);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(open->SerializeAsString(), after->open.SerializeAsString());
    ASSERT_EQ(streamed.size(), after->chunks.size());
    EXPECT_GE(streamed.size(), every.size());  // one layer per chunk at least
    for (size_t i = 0; i < streamed.size(); ++i) {
      EXPECT_EQ(streamed[i].SerializeAsString(), after->chunks[i].SerializeAsString()) << i;
    }
  }
  // Only a whole cache can go before its statistics exist.
  Request q2c = Make(kvstream::v1::MODE_KV, "raw", select::Policy::kQ2C, 0.5);
  q2c.layer_chunks = true;
  EXPECT_FALSE(q2c.CanStreamLayers());
  EXPECT_EQ(OpenBeforePrefill(*scout_, *prompt_, q2c, NewSessionId()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto refused = Prefill(*scout_, *prompt_, q2c, nullptr,
                         [](int, const model::KvCache&) { return absl::OkStatus(); });
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("only for kv or projected without a selector"),
            std::string::npos)
      << refused.status();
  // A callback's error stops the prefill and is returned.
  int calls = 0;
  auto stopped = Prefill(*scout_, *prompt_, Make(kvstream::v1::MODE_KV), nullptr,
                         [&calls](int, const model::KvCache&) {
                           ++calls;
                           return absl::UnavailableError("stream broke");
                         });
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace kvstream::pipeline
