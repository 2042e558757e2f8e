// ChatML prompts (Qwen's chat format) for context question answering, with the token
// spans of template, context and question, so selection never guesses boundaries.
//
//   <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n    template
//   {context}                                                     context span
//   \n\nQuestion:                                                 template
//    {question}                                                   question span
//   <|im_end|>\n<|im_start|>assistant\n                           template
//
// Each piece is encoded on its own and the ids concatenated, so the spans are exact.
// User text (context, question) is encoded with special-token parsing off: a document
// cannot inject <|im_end|>.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/tokenizer.h"
#include "common/select/select.h"

namespace kvstream::model {

struct ChatOptions {
  std::string system = "You are a helpful assistant.";
};

struct ChatPrompt {
  std::vector<int32_t> tokens;
  select::PromptSpans spans;
};

absl::StatusOr<ChatPrompt> BuildQaPrompt(const Tokenizer& tokenizer, const std::string& context,
                                         const std::string& question,
                                         const ChatOptions& options = {});

// Ids that end an assistant turn: <|im_end|> and <|endoftext|> where the vocabulary has them.
std::vector<int32_t> StopTokens(const Tokenizer& tokenizer);

}  // namespace kvstream::model
