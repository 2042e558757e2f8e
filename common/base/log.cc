#include "common/base/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include "absl/strings/str_cat.h"

namespace kvstream::logging {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
}

bool ParseLevel(absl::string_view name, Level* level) {
  if (name == "debug")
    *level = Level::kDebug;
  else if (name == "info")
    *level = Level::kInfo;
  else if (name == "warning")
    *level = Level::kWarning;
  else if (name == "error")
    *level = Level::kError;
  else
    return false;
  return true;
}

absl::Status SetLevelByName(absl::string_view name) {
  Level level;
  if (!ParseLevel(name, &level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_level: expected debug, info, warning or error; found '", name, "'"));
  }
  SetLevel(level);
  return absl::OkStatus();
}

void SetLevel(Level level) { g_level = static_cast<int>(level); }
bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(); }

void Write(Level level, absl::string_view component, absl::string_view message) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm;
  gmtime_r(&secs, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  static constexpr char kLetters[] = "DIWE";
  const std::string line = absl::StrFormat("%s.%03dZ %c %s: %s\n", stamp, millis,
                                           kLetters[static_cast<int>(level)], component, message);
  // One write(2) per line: atomic for lines under PIPE_BUF on pipes, never interleaved.
  ssize_t ignored = ::write(2, line.data(), line.size());
  (void)ignored;
}

}  // namespace kvstream::logging
