// The one vocabulary for how a request is answered: the wire's kvstream.v1.Mode, its
// names (flags, quality tables, metric labels, logs) and what each mode implies for the
// two sides. Everything that branches on a mode asks these, so a new mode is added here
// and in the pipeline's strategy table, not in every service.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kvstream/v1/service.pb.h"

namespace kvstream::pipeline {

using Mode = kvstream::v1::Mode;

// "kv", "projected", "scout", "text", "adaptive"; "unspecified" for anything else.
const char* ModeName(Mode mode);

// The inverse of ModeName for the five named modes; INVALID_ARGUMENT naming the choices
// otherwise. `adaptive` only with `allow_adaptive` (a quality table's point is a mode
// that answers, never the controller itself).
absl::StatusOr<Mode> ParseMode(absl::string_view name, bool allow_adaptive = true);

// KV, PROJECTED, SCOUT or TEXT: a mode a request is answered in.
bool Answers(Mode mode);
// KV and PROJECTED: the sender's KV cache goes on the wire.
bool SendsCache(Mode mode);
// Every answering mode but KV names the cloud model that answers; KV finds it by the
// sender's model fingerprint.
bool NamesCloudModel(Mode mode);
// SCOUT and TEXT: the cloud model prefills the prompt's token ids itself.
bool CloudPrefills(Mode mode);

}  // namespace kvstream::pipeline
