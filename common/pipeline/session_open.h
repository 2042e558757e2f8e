// The checks a SessionOpen must pass against the served model that will answer it. The
// service (cloud_service.cc) first picks that model, by fingerprint in kv mode and by
// name otherwise, and in projected mode its projection; everything after that depends
// only on the message and the model's config, and lives here, free of libtorch and of
// the service, so that the fuzz target beside it reaches every check.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model/config.h"
#include "kvstream/v1/service.pb.h"

namespace kvstream::pipeline {

// INVALID_ARGUMENT unless `mode` is KV, PROJECTED, SCOUT or TEXT.
absl::Status CheckSessionMode(kvstream::v1::Mode mode);

// The longest SessionOpen.answer_after_seconds accepted.
inline constexpr double kMaxAnswerAfterSeconds = 3600;

struct OpenLimits {
  uint32_t max_new_tokens = 512;     // cap on SessionOpen.max_tokens
  uint32_t default_new_tokens = 32;  // when SessionOpen.max_tokens is 0
};

// A SessionOpen that passed CheckSessionOpen, in the cloud's terms.
struct CheckedOpen {
  int max_new_tokens = 0;
  double temperature = 0;
  double top_p = 1;  // 0 on the wire means 1
  uint64_t seed = 0;
  // scout / text: the whole prompt, ids in the vocabulary; projected with an answer
  // check: the prompt answered from when the check fails (CheckAnswerCheck)
  std::vector<int32_t> prompt;
  // kv / projected: the slots' positions, strictly increasing, below next_position;
  // scout: the kept prompt positions likewise (empty: every position).
  std::vector<int32_t> kept;
  int32_t last_token = 0;  // fed first through the cache
  int next_position = 0;   // its position id; next_position + max_new_tokens fits the model
  uint64_t slots = 0;      // cache slots filled before decoding
  // kv / projected, progressive: the slots of each importance tier (`kept` lists them
  // tier by tier); empty otherwise.
  std::vector<uint32_t> tier_slots;
  double answer_after_seconds = 0;  // progressive: answer without Commit after this (0: never)
  int32_t check_token = -1;  // projected, Commit.check: the sender's first token (-1: no check)
};

// Checks `open` against `config`, the config of the served model `model_name` (named in
// errors): the mode; in kv mode the sender's dims (FAILED_PRECONDITION); max_tokens
// against `limits`; sampling; then the cache (kv / projected: last token, slots, kept
// positions) or the prompt (scout / text: token ids, kept positions) against the model's
// vocabulary and positions. Otherwise INVALID_ARGUMENT naming the field, what was
// expected and what was found.
absl::StatusOr<CheckedOpen> CheckSessionOpen(const kvstream::v1::SessionOpen& open,
                                             const model::ModelConfig& config,
                                             absl::string_view model_name,
                                             const OpenLimits& limits);

// Commit.check, when present, against the session `open` describes: projected sessions
// only, the expected token in the vocabulary, and the whole prompt (next_position + 1
// ids in the vocabulary, ending with last_token). Sets `open.check_token` and
// `open.prompt`; INVALID_ARGUMENT naming what was expected and found otherwise.
absl::Status CheckAnswerCheck(const kvstream::v1::Commit& commit, kvstream::v1::Mode mode,
                              const model::ModelConfig& config, absl::string_view model_name,
                              CheckedOpen& open);

}  // namespace kvstream::pipeline
