#include "common/model/chat.h"

#include "absl/strings/str_cat.h"
#include "common/base/status.h"

namespace kvstream::model {

absl::StatusOr<ChatPrompt> BuildQaPrompt(const Tokenizer& tok, const std::string& context,
                                         const std::string& question, const ChatOptions& options) {
  if (tok.TokenId("<|im_start|>") < 0 || tok.TokenId("<|im_end|>") < 0) {
    return absl::FailedPreconditionError(
        "tokenizer has no <|im_start|>/<|im_end|> tokens for ChatML");
  }
  if (question.empty()) return absl::InvalidArgumentError("question is empty");
  ChatPrompt p;
  auto append = [&](const std::string& text, bool special) -> absl::Status {
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok.Encode(text, special));
    p.tokens.insert(p.tokens.end(), ids.begin(), ids.end());
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(
      append(absl::StrCat("<|im_start|>system\n", options.system, "<|im_end|>\n<|im_start|>user\n"),
             true));
  p.spans.context_begin = static_cast<int>(p.tokens.size());
  if (!context.empty()) RETURN_IF_ERROR(append(context, false));
  p.spans.context_end = static_cast<int>(p.tokens.size());
  RETURN_IF_ERROR(append("\n\nQuestion:", false));
  p.spans.question_begin = static_cast<int>(p.tokens.size());
  RETURN_IF_ERROR(append(absl::StrCat(" ", question), false));
  p.spans.question_end = static_cast<int>(p.tokens.size());
  RETURN_IF_ERROR(append("<|im_end|>\n<|im_start|>assistant\n", true));
  p.spans.num_tokens = static_cast<int>(p.tokens.size());
  return p;
}

std::vector<int32_t> StopTokens(const Tokenizer& tok) {
  std::vector<int32_t> out;
  for (const char* t : {"<|im_end|>", "<|endoftext|>"}) {
    if (tok.TokenId(t) >= 0) out.push_back(tok.TokenId(t));
  }
  return out;
}

}  // namespace kvstream::model
