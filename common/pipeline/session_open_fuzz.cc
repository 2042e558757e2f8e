// libFuzzer target for the cloud's SessionOpen checks (CheckSessionOpen). Input: one
// control byte, then a serialized SessionOpen. Bit 0 of the control byte picks the
// served model's config (the tiny scout's, or one with only 64 positions so the position
// limits are near); bit 1 the cloud's token limits; bit 2 also checks a Commit whose
// answer check carries the SessionOpen's own prompt_tokens and, as the expected token,
// its seed (CheckAnswerCheck).
//
// Invariants checked on every SessionOpen that passes: max_new_tokens in 1..the cap;
// temperature finite and >= 0, top_p in (0, 1]; kv / projected: the sender's dims are
// the model's, last_token in the vocabulary, 0 < slots == |kept| <= next_position;
// scout / text: at least 2 prompt ids, all in the vocabulary, last_token and
// next_position taken from the prompt, kept empty or inside it; kept strictly increasing
// and below next_position, and re-encoded to the bytes that were sent; next_position +
// max_new_tokens below the model's positions. An accepted answer check: a projected
// session, the expected token in the vocabulary, the whole prompt (next_position + 1 ids
// in the vocabulary, ending with last_token); a refused one changes nothing.
//
// Build and run: docs/fuzzing.md. The committed corpus (session_open_fuzz_corpus/) also
// runs as a regression test (tests/common/pipeline/session_open_fuzz_corpus_test.cc).
#include <google/protobuf/stubs/logging.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/base/fuzz_check.h"
#include "common/codec/positions.h"
#include "common/codec/spec.h"
#include "common/pipeline/mode.h"
#include "common/pipeline/session_open.h"

namespace {

using kvstream::model::ModelConfig;
using kvstream::pipeline::CheckedOpen;
using kvstream::pipeline::OpenLimits;

// Malformed messages are expected input here; keep protobuf's parse warnings off stderr.
const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return true;
}();

ModelConfig Config(bool short_context) {
  ModelConfig c;  // testdata/models/scout/config.json
  c.architecture = "Qwen2ForCausalLM";
  c.vocab_size = 2048;
  c.hidden_size = 96;
  c.intermediate_size = 256;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 24;
  c.max_position_embeddings = short_context ? 64 : 4096;
  return c;
}

void CheckOpen(const kvstream::v1::SessionOpen& open, const ModelConfig& c,
               const OpenLimits& limits, const CheckedOpen& o) {
  kvstream::base::FuzzCheck(o.max_new_tokens >= 1 &&
                            static_cast<uint32_t>(o.max_new_tokens) <= limits.max_new_tokens);
  kvstream::base::FuzzCheck(std::isfinite(o.temperature) && o.temperature >= 0 && o.top_p > 0 &&
                            o.top_p <= 1);
  const bool cache_sent =
      open.mode() == kvstream::v1::MODE_KV || open.mode() == kvstream::v1::MODE_PROJECTED;
  if (open.mode() == kvstream::v1::MODE_KV) {
    kvstream::base::FuzzCheck(static_cast<int64_t>(open.dims().num_layers()) == c.num_layers &&
                              static_cast<int64_t>(open.dims().num_kv_heads()) == c.num_kv_heads &&
                              static_cast<int64_t>(open.dims().head_dim()) == c.head_dim);
  }
  if (cache_sent) {
    kvstream::base::FuzzCheck(o.prompt.empty() && o.slots > 0 && o.slots == o.kept.size());
    kvstream::base::FuzzCheck(o.slots <= static_cast<uint64_t>(o.next_position));
  } else {
    kvstream::base::FuzzCheck(o.prompt.size() >= 2 && o.last_token == o.prompt.back() &&
                              o.next_position == static_cast<int>(o.prompt.size()) - 1);
    for (int32_t id : o.prompt) kvstream::base::FuzzCheck(id >= 0 && id < c.vocab_size);
    kvstream::base::FuzzCheck(o.slots == (o.kept.empty() ? o.prompt.size() - 1 : o.kept.size()));
  }
  kvstream::base::FuzzCheck(o.last_token >= 0 && o.last_token < c.vocab_size);
  // Strictly increasing, or within each tier of a progressive session (and then no
  // position twice).
  kvstream::base::FuzzCheck(std::equal(o.tier_slots.begin(), o.tier_slots.end(),
                                       open.tier_slots().begin(), open.tier_slots().end()));
  if (!o.tier_slots.empty()) {
    kvstream::base::FuzzCheck(kvstream::pipeline::SendsCache(open.mode()));
    kvstream::base::FuzzCheck(o.tier_slots.size() >= 2 &&
                              o.tier_slots.size() <= kvstream::codec::kMaxTiers);
    for (uint32_t n : o.tier_slots) kvstream::base::FuzzCheck(n > 0);
  }
  kvstream::base::FuzzCheck(o.answer_after_seconds == 0 ||
                            (!o.tier_slots.empty() && o.answer_after_seconds > 0 &&
                             o.answer_after_seconds <= kvstream::pipeline::kMaxAnswerAfterSeconds));
  std::vector<size_t> tier_starts = {0};
  for (uint32_t n : o.tier_slots) tier_starts.push_back(tier_starts.back() + n);
  if (!o.tier_slots.empty()) kvstream::base::FuzzCheck(tier_starts.back() == o.kept.size());
  std::vector<int32_t> sorted = o.kept;
  std::sort(sorted.begin(), sorted.end());
  kvstream::base::FuzzCheck(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
  for (size_t i = 0; i < o.kept.size(); ++i) {
    kvstream::base::FuzzCheck(o.kept[i] >= 0 && o.kept[i] < o.next_position);
    const bool starts_tier =
        std::find(tier_starts.begin(), tier_starts.end(), i) != tier_starts.end();
    if (i > 0 && !starts_tier) kvstream::base::FuzzCheck(o.kept[i] > o.kept[i - 1]);
  }
  const std::string encoded = o.tier_slots.empty()
                                  ? kvstream::codec::EncodePositions(o.kept)
                                  : kvstream::codec::EncodePositionRuns(o.kept, o.tier_slots);
  if (!o.kept.empty()) kvstream::base::FuzzCheck(encoded == open.kept_positions());
  kvstream::base::FuzzCheck(static_cast<int64_t>(o.next_position) + o.max_new_tokens <
                            c.max_position_embeddings);
}

void CheckCommit(const kvstream::v1::SessionOpen& open, const ModelConfig& c, CheckedOpen o) {
  kvstream::v1::Commit commit;
  commit.mutable_check()->set_expected_token(static_cast<int32_t>(open.seed()));
  *commit.mutable_check()->mutable_prompt_tokens() = open.prompt_tokens();
  const CheckedOpen before = o;
  if (!kvstream::pipeline::CheckAnswerCheck(commit, open.mode(), c, "scout", o).ok()) {
    kvstream::base::FuzzCheck(o.check_token == before.check_token && o.prompt == before.prompt);
    return;
  }
  kvstream::base::FuzzCheck(open.mode() == kvstream::v1::MODE_PROJECTED);
  kvstream::base::FuzzCheck(o.check_token >= 0 && o.check_token < c.vocab_size);
  kvstream::base::FuzzCheck(o.prompt.size() == static_cast<size_t>(o.next_position) + 1 &&
                            o.prompt.back() == o.last_token);
  for (int32_t id : o.prompt) kvstream::base::FuzzCheck(id >= 0 && id < c.vocab_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  kvstream::v1::SessionOpen open;
  if (!open.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  const ModelConfig config = Config(data[0] & 1);
  const OpenLimits limits = (data[0] & 2) ? OpenLimits{16, 16} : OpenLimits{};
  auto checked = kvstream::pipeline::CheckSessionOpen(open, config, "scout", limits);
  if (checked.ok()) CheckOpen(open, config, limits, *checked);
  if (checked.ok() && (data[0] & 4)) CheckCommit(open, config, *checked);
  return 0;
}
