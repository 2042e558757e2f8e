// Trains a byte-level BPE tokenizer (the GPT-2 / Qwen2 kind) and writes it as a Hugging
// Face tokenizer.json that Tokenizer (and HF's own libraries) load: NFC normalizer, the
// Qwen2 pre-tokenizer regex, merges as "a b" strings, ChatML special tokens.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvstream::model {

// The Qwen2 pre-tokenizer pattern.
extern const char kQwen2Pattern[];

struct BpeTrainOptions {
  int vocab_size = 1024;  // byte alphabet + merges + special tokens
  int min_frequency = 2;  // a pair seen fewer times is not merged
  std::vector<std::string> special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
};

// Learns merges from `texts`; returns the tokenizer.json text.
absl::StatusOr<std::string> TrainBpeTokenizer(const std::vector<std::string>& texts,
                                              const BpeTrainOptions& options);

}  // namespace kvstream::model
