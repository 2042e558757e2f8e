#include "common/pipeline/mode.h"

#include "absl/strings/str_cat.h"
#include "common/base/quote.h"

namespace kvstream::pipeline {

const char* ModeName(Mode mode) {
  switch (mode) {
    case kvstream::v1::MODE_KV:
      return "kv";
    case kvstream::v1::MODE_PROJECTED:
      return "projected";
    case kvstream::v1::MODE_SCOUT:
      return "scout";
    case kvstream::v1::MODE_TEXT:
      return "text";
    case kvstream::v1::MODE_ADAPTIVE:
      return "adaptive";
    default:
      return "unspecified";
  }
}

absl::StatusOr<Mode> ParseMode(absl::string_view name, bool allow_adaptive) {
  for (const Mode m : {kvstream::v1::MODE_KV, kvstream::v1::MODE_PROJECTED,
                       kvstream::v1::MODE_SCOUT, kvstream::v1::MODE_TEXT}) {
    if (name == ModeName(m)) return m;
  }
  if (allow_adaptive && name == "adaptive") return kvstream::v1::MODE_ADAPTIVE;
  return absl::InvalidArgumentError(absl::StrCat("mode: expected kv, projected, scout, text",
                                                 allow_adaptive ? " or adaptive" : "", "; found ",
                                                 base::Quote(name)));
}

bool Answers(Mode mode) {
  return mode == kvstream::v1::MODE_KV || mode == kvstream::v1::MODE_PROJECTED ||
         mode == kvstream::v1::MODE_SCOUT || mode == kvstream::v1::MODE_TEXT;
}

bool SendsCache(Mode mode) {
  return mode == kvstream::v1::MODE_KV || mode == kvstream::v1::MODE_PROJECTED;
}

bool NamesCloudModel(Mode mode) { return Answers(mode) && mode != kvstream::v1::MODE_KV; }

bool CloudPrefills(Mode mode) {
  return mode == kvstream::v1::MODE_SCOUT || mode == kvstream::v1::MODE_TEXT;
}

}  // namespace kvstream::pipeline
