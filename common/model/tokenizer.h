// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (the Qwen2 / GPT-2
// family): added tokens split out first, NFC normalization, the model's pre-tokenizer
// regex (PCRE2, which has the lookahead the Qwen2 pattern needs), the byte-to-unicode
// mapping, then BPE merges by rank. Decoding reverses the byte mapping.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvstream::model {

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  // `source` names the file in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json,
                                                             absl::string_view source);
  ~Tokenizer();

  // Token ids of UTF-8 `text`. Added tokens written in the text (e.g. "<|im_end|>") are
  // recognised when `parse_special`. Invalid UTF-8 is an INVALID_ARGUMENT error.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              bool parse_special = true) const;
  // Text of `ids`; ids outside the vocabulary are an error.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special = false) const;

  // The pieces BPE would see for `text` (no added-token handling): normalized, split by
  // the pre-tokenizer regex. Used to train tokenizers with the same splitting.
  absl::StatusOr<std::vector<std::string>> PreTokenize(absl::string_view text) const;

  // Id of a token string (vocabulary or added token), or -1.
  int TokenId(absl::string_view token) const;
  // Largest id + 1 over vocabulary and added tokens.
  int vocab_size() const;
  bool IsSpecial(int32_t id) const;

 private:
  struct Impl;
  class Loader;  // reads tokenizer.json into an Impl
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The GPT-2 byte-level alphabet: byte b is written as code point ByteToUnicode()[b].
const std::vector<uint32_t>& ByteToUnicode();
// UTF-8 encoding of one code point.
std::string CodepointToUtf8(uint32_t cp);

// A token counter (as eval::TaskGenerator takes one): `text`'s length in tokens, encoded
// without special tokens, or 0 with the first error kept in `error` (which must outlive
// the counter) for the caller to return.
std::function<int(const std::string&)> CountTokens(const Tokenizer& tokenizer, absl::Status& error);

}  // namespace kvstream::model
