#include "common/pipeline/session_open.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/codec/positions.h"
#include "common/codec/spec.h"
#include "common/pipeline/mode.h"

namespace kvstream::pipeline {

absl::Status CheckSessionMode(kvstream::v1::Mode mode) {
  if (!pipeline::Answers(mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SessionOpen.mode: expected MODE_KV, MODE_PROJECTED, MODE_SCOUT or MODE_TEXT, found ",
        kvstream::v1::Mode_Name(mode)));
  }
  return absl::OkStatus();
}

namespace {

// kv mode's cache must have the answering model's shape.
absl::Status CheckDims(const kvstream::v1::SessionOpen& open, const model::ModelConfig& c,
                       absl::string_view model_name) {
  if (open.mode() != kvstream::v1::MODE_KV) return absl::OkStatus();
  const kvstream::v1::ModelDims& d = open.dims();
  const std::pair<const char*, std::pair<uint32_t, int>> dims[] = {
      {"num_layers", {d.num_layers(), c.num_layers}},
      {"num_kv_heads", {d.num_kv_heads(), c.num_kv_heads}},
      {"head_dim", {d.head_dim(), c.head_dim}},
  };
  for (const auto& [field, v] : dims) {
    if (static_cast<int64_t>(v.first) != v.second) {
      return absl::FailedPreconditionError(absl::StrCat("SessionOpen.dims.", field, " is ", v.first,
                                                        " but model '", model_name, "' has ",
                                                        v.second));
    }
  }
  return absl::OkStatus();
}

// max_tokens within the cloud's limit, temperature and top_p in range.
absl::Status CheckSampling(const kvstream::v1::SessionOpen& open, const OpenLimits& limits,
                           CheckedOpen& out) {
  const uint32_t max_tokens =
      open.max_tokens() == 0 ? limits.default_new_tokens : open.max_tokens();
  if (max_tokens > limits.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_tokens is ", max_tokens, "; this cloud allows at most ", limits.max_new_tokens));
  }
  if (!(open.temperature() >= 0) || !std::isfinite(open.temperature()) || !(open.top_p() >= 0) ||
      open.top_p() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be >= 0 and top_p in [0, 1] (0: 1), found ",
                     open.temperature(), " and ", open.top_p()));
  }
  out.max_new_tokens = static_cast<int>(max_tokens);
  out.temperature = open.temperature();
  out.top_p = open.top_p() == 0 ? 1.0 : open.top_p();
  out.seed = open.seed();
  return absl::OkStatus();
}

// kv and projected, progressive: 2..kMaxTiers non-empty tiers covering num_slots.
absl::Status CheckTiers(const kvstream::v1::SessionOpen& open, CheckedOpen& out) {
  const double after = open.answer_after_seconds();
  if (!(after >= 0 && after <= kMaxAnswerAfterSeconds) ||
      (after > 0 && open.tier_slots_size() == 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SessionOpen.answer_after_seconds: expected 0, or 0..", kMaxAnswerAfterSeconds,
                     " seconds in a progressive session (with tier_slots), found ", after,
                     open.tier_slots_size() == 0 ? " without tier_slots" : ""));
  }
  out.answer_after_seconds = after;
  if (open.tier_slots_size() == 0) return absl::OkStatus();
  uint64_t total = 0;
  bool empty = false;
  for (uint32_t n : open.tier_slots()) {
    total += n;
    empty = empty || n == 0;
  }
  if (open.tier_slots_size() < 2 || open.tier_slots_size() > codec::kMaxTiers || empty ||
      total != open.num_slots()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SessionOpen.tier_slots: expected 2..", codec::kMaxTiers,
        " non-empty tiers summing to num_slots ", open.num_slots(), ", found ",
        open.tier_slots_size(), " tiers", empty ? " (one empty)" : "", " summing to ", total));
  }
  out.tier_slots.assign(open.tier_slots().begin(), open.tier_slots().end());
  return absl::OkStatus();
}

// kv and projected: the last token, the positions and the kept slots of the cache sent.
absl::Status CheckCacheOpen(const kvstream::v1::SessionOpen& open, const model::ModelConfig& c,
                            absl::string_view model_name, CheckedOpen& out) {
  if (open.last_token() < 0 || open.last_token() >= c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("SessionOpen.last_token is ", open.last_token(),
                                                   ", expected 0..", c.vocab_size - 1));
  }
  if (open.next_position() == 0 || open.num_slots() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv mode needs num_slots > 0 and next_position > 0, found ", open.num_slots(),
                     " and ", open.next_position()));
  }
  // Checked before any narrowing: a position past the model's is refused, not wrapped.
  if (open.next_position() >= static_cast<uint32_t>(c.max_position_embeddings) ||
      open.num_slots() > open.next_position()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SessionOpen.next_position is ", open.next_position(), " with ",
                     open.num_slots(), " slots; model '", model_name, "' allows positions below ",
                     c.max_position_embeddings, " and at most one slot per position"));
  }
  out.last_token = open.last_token();
  out.next_position = static_cast<int>(open.next_position());
  RETURN_IF_ERROR(CheckTiers(open, out));
  auto kept =
      out.tier_slots.empty()
          ? codec::DecodePositions(open.kept_positions(), open.num_slots(), open.next_position())
          : codec::DecodePositionRuns(open.kept_positions(), out.tier_slots, open.next_position());
  if (!kept.ok()) return PrefixStatus("SessionOpen.kept_positions: ", kept.status());
  out.kept = std::move(*kept);
  out.slots = open.num_slots();
  return absl::OkStatus();
}

// Every id of `ids` (the field `what`) in the model's vocabulary.
absl::Status CheckIds(const std::vector<int32_t>& ids, absl::string_view what,
                      const model::ModelConfig& c, absl::string_view model_name) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(what, "[", i, "] is ", ids[i],
                                                     ", expected 0..", c.vocab_size - 1,
                                                     " for model '", model_name, "'"));
    }
  }
  return absl::OkStatus();
}

// text and scout: the whole prompt's tokens, and scout's kept positions.
absl::Status CheckPromptOpen(const kvstream::v1::SessionOpen& open, const model::ModelConfig& c,
                             absl::string_view model_name, CheckedOpen& out) {
  if (open.tier_slots_size() > 0 || open.answer_after_seconds() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SessionOpen.tier_slots and answer_after_seconds: progressive sending is for kv and "
        "projected sessions, found ",
        open.tier_slots_size(), " tiers and ", open.answer_after_seconds(), " s in a ",
        ModeName(open.mode()), " session"));
  }
  if (open.prompt_tokens_size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("SessionOpen.prompt_tokens has ", open.prompt_tokens_size(),
                     " tokens; expected the whole prompt (at least 2)"));
  }
  out.prompt.assign(open.prompt_tokens().begin(), open.prompt_tokens().end());
  RETURN_IF_ERROR(CheckIds(out.prompt, "SessionOpen.prompt_tokens", c, model_name));
  out.last_token = out.prompt.back();
  out.next_position = static_cast<int>(out.prompt.size()) - 1;
  if (open.mode() != kvstream::v1::MODE_SCOUT || open.kept_positions().empty()) {
    out.slots = out.prompt.size() - 1;
    return absl::OkStatus();
  }
  auto kept = codec::DecodePositions(open.kept_positions(), open.num_slots(), out.next_position);
  if (!kept.ok()) return PrefixStatus("SessionOpen.kept_positions: ", kept.status());
  out.kept = std::move(*kept);
  out.slots = out.kept.size();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CheckedOpen> CheckSessionOpen(const kvstream::v1::SessionOpen& open,
                                             const model::ModelConfig& c,
                                             absl::string_view model_name,
                                             const OpenLimits& limits) {
  RETURN_IF_ERROR(CheckSessionMode(open.mode()));
  RETURN_IF_ERROR(CheckDims(open, c, model_name));
  CheckedOpen out;
  RETURN_IF_ERROR(CheckSampling(open, limits, out));
  if (pipeline::SendsCache(open.mode())) {
    RETURN_IF_ERROR(CheckCacheOpen(open, c, model_name, out));
  } else {
    RETURN_IF_ERROR(CheckPromptOpen(open, c, model_name, out));
  }
  if (static_cast<int64_t>(out.next_position) + out.max_new_tokens >= c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", out.next_position + 1, " tokens plus max_tokens ", out.max_new_tokens,
        " exceeds model '", model_name, "''s ", c.max_position_embeddings, " positions"));
  }
  return out;
}

absl::Status CheckAnswerCheck(const kvstream::v1::Commit& commit, kvstream::v1::Mode mode,
                              const model::ModelConfig& c, absl::string_view model_name,
                              CheckedOpen& open) {
  if (!commit.has_check()) return absl::OkStatus();
  if (mode != kvstream::v1::MODE_PROJECTED) {
    return absl::InvalidArgumentError(
        absl::StrCat("Commit.check: expected only in a projected session, found one in a ",
                     ModeName(mode), " session"));
  }
  const kvstream::v1::AnswerCheck& check = commit.check();
  const std::vector<int32_t> expected = {check.expected_token()};
  RETURN_IF_ERROR(CheckIds(expected, "Commit.check.expected_token", c, model_name));
  const auto n = static_cast<size_t>(open.next_position) + 1;
  if (static_cast<size_t>(check.prompt_tokens_size()) != n ||
      check.prompt_tokens(check.prompt_tokens_size() - 1) != open.last_token) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Commit.check.prompt_tokens: expected the whole prompt, ", n,
        " ids ending with last_token ", open.last_token, ", found ", check.prompt_tokens_size(),
        check.prompt_tokens_size() > 0
            ? absl::StrCat(" ending with ", check.prompt_tokens(check.prompt_tokens_size() - 1))
            : ""));
  }
  std::vector<int32_t> prompt(check.prompt_tokens().begin(), check.prompt_tokens().end());
  RETURN_IF_ERROR(CheckIds(prompt, "Commit.check.prompt_tokens", c, model_name));
  open.prompt = std::move(prompt);
  open.check_token = check.expected_token();
  return absl::OkStatus();
}

}  // namespace kvstream::pipeline
