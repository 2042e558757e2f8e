// libFuzzer target for tokenizer.json (Tokenizer::FromJson), and for Encode / Decode on
// the tokenizers it accepts. Input: the tokenizer.json text, then optionally a NUL byte
// and a text to encode (at most 64 bytes are used); without one, a few fixed texts.
//
// Invariants checked on every tokenizer that loads: every byte has a token (at least 256
// ids); for each text, Encode succeeds on valid UTF-8, gives ids inside the vocabulary
// that Decode accepts, and the pre-tokenizer's pieces put together are the text; and
// where neither added tokens nor NFC can change the bytes (no added tokens; no
// normalizer, or ASCII text), Decode(Encode(text)) == text.
//
// Build and run: docs/fuzzing.md. The committed corpus (tokenizer_fuzz_corpus/) also runs
// as a regression test (tests/common/model/tokenizer_fuzz_corpus_test.cc).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/base/fuzz_check.h"
#include "common/model/tokenizer.h"

namespace {

bool Ascii(absl::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF), as Encode wants.
bool ValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;  // continuation bytes
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

// Invalid UTF-8 is refused; valid text is accepted unless the pre-tokenizer regex itself
// fails (PCRE2's match limit on a pathological pattern: INTERNAL).
void CheckAccepted(const absl::Status& status, bool valid) {
  if (!valid) {
    kvstream::base::FuzzCheck(status.code() == absl::StatusCode::kInvalidArgument);
  } else {
    kvstream::base::FuzzCheck(status.ok() || status.code() == absl::StatusCode::kInternal);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const absl::string_view json_text = input.substr(0, nul);
  auto tok = kvstream::model::Tokenizer::FromJson(json_text, "fuzz");
  if (!tok.ok()) return 0;
  const kvstream::model::Tokenizer& t = **tok;
  kvstream::base::FuzzCheck(t.vocab_size() >= 256);

  const auto j = nlohmann::json::parse(json_text.begin(), json_text.end(), nullptr, false);
  const bool added =
      j.contains("added_tokens") && j["added_tokens"].is_array() && !j["added_tokens"].empty();
  const bool nfc = j.contains("normalizer") && j["normalizer"].is_object();

  std::vector<std::string> texts;
  if (nul != absl::string_view::npos) {
    texts.emplace_back(input.substr(nul + 1, 64));
  } else {
    texts = {"Hello world", " a\tb\n\n  c", "<|im_end|>x", "caf\xc3\xa9 e\xcc\x81", ""};
  }
  for (const std::string& text : texts) {
    const bool exact = !added && (!nfc || Ascii(text));
    const bool valid = ValidUtf8(text);
    auto pieces = t.PreTokenize(text);
    CheckAccepted(pieces.status(), valid);
    if (pieces.ok() && exact) {
      std::string joined;
      for (const std::string& p : *pieces) joined += p;
      kvstream::base::FuzzCheck(joined == text);
    }
    for (const bool special : {false, true}) {
      auto ids = t.Encode(text, special);
      CheckAccepted(ids.status(), valid);
      if (!ids.ok()) continue;
      for (int32_t id : *ids) kvstream::base::FuzzCheck(id >= 0 && id < t.vocab_size());
      auto back = t.Decode(*ids);
      kvstream::base::FuzzCheck(back.ok());
      if (exact) kvstream::base::FuzzCheck(*back == text);
    }
  }
  return 0;
}
