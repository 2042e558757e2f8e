// Quoting user input in error messages: at most a bounded prefix, so an error about a
// 100 KB field stays readable and fits in gRPC's status metadata.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace kvstream::base {

// `text` in single quotes when it is at most `max` bytes; otherwise its first `max`
// bytes, quoted, followed by "... (N bytes)".
std::string Quote(absl::string_view text, size_t max = 200);

// `message` cut to `max` bytes with "... (N bytes)" when longer: the last guard before a
// status message leaves the process.
std::string Bounded(absl::string_view message, size_t max = 1024);

// The offset of the first byte that does not begin or continue a valid UTF-8 sequence
// (overlong forms, surrogates and code points past U+10FFFF are invalid); npos when
// `text` is valid.
size_t InvalidUtf8At(absl::string_view text);

}  // namespace kvstream::base
