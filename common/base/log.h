// Minimal line logger for the daemons: "2026-11-29T03:13:04.123Z I cloud: message" on
// stderr, one write per line (lines from concurrent requests never interleave), with a
// process-wide threshold set from --log_level.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace kvstream::logging {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" or "error"; false for anything else.
bool ParseLevel(absl::string_view name, Level* level);
// ParseLevel then SetLevel; INVALID_ARGUMENT naming the expected values otherwise.
absl::Status SetLevelByName(absl::string_view name);
void SetLevel(Level level);
bool Enabled(Level level);
void Write(Level level, absl::string_view component, absl::string_view message);

template <typename... Args>
void Logf(Level level, absl::string_view component, const absl::FormatSpec<Args...>& format,
          const Args&... args) {
  if (Enabled(level)) Write(level, component, absl::StrFormat(format, args...));
}

}  // namespace kvstream::logging
