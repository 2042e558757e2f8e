#include "common/base/quote.h"

#include "absl/strings/str_cat.h"

namespace kvstream::base {

std::string Quote(absl::string_view text, size_t max) {
  if (text.size() <= max) return absl::StrCat("'", text, "'");
  return absl::StrCat("'", text.substr(0, max), "'... (", text.size(), " bytes)");
}

std::string Bounded(absl::string_view message, size_t max) {
  if (message.size() <= max) return std::string(message);
  return absl::StrCat(message.substr(0, max), "... (", message.size(), " bytes)");
}

size_t InvalidUtf8At(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return absl::string_view::npos;
}

}  // namespace kvstream::base
