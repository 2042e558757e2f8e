// kvstream tokenize: the tokenizer from outside. Reads UTF-8 text on stdin and prints
// the token ids, space-separated, on one line; with --decode reads ids and prints text.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/model/tokenizer.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(bool, decode, false, "Read space-separated token ids on stdin and print their text");
ABSL_FLAG(bool, no_special, false,
          "Encode added-token strings such as <|im_end|> as plain text instead of their ids");

namespace kvstream::cli {

int RunTokenize() {
  const std::string path = absl::GetFlag(FLAGS_tokenizer);
  if (path.empty()) {
    std::fprintf(stderr, "kvstream tokenize: --tokenizer=PATH/tokenizer.json is required\n");
    return 2;
  }
  auto tok = model::Tokenizer::Load(path);
  if (!tok.ok()) {
    std::fprintf(stderr, "kvstream tokenize: %s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  const std::string input((std::istreambuf_iterator<char>(std::cin)),
                          std::istreambuf_iterator<char>());
  if (absl::GetFlag(FLAGS_decode)) {
    std::vector<int32_t> ids;
    for (absl::string_view field :
         absl::StrSplit(input, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(field, &id)) {
        std::fprintf(stderr, "kvstream tokenize: expected an integer token id, found '%s'\n",
                     std::string(field).c_str());
        return 1;
      }
      ids.push_back(id);
    }
    auto text = (*tok)->Decode(ids);
    if (!text.ok()) {
      std::fprintf(stderr, "kvstream tokenize: %s\n", std::string(text.status().message()).c_str());
      return 1;
    }
    std::fwrite(text->data(), 1, text->size(), stdout);
    return 0;
  }
  auto ids = (*tok)->Encode(input, !absl::GetFlag(FLAGS_no_special));
  if (!ids.ok()) {
    std::fprintf(stderr, "kvstream tokenize: %s\n", std::string(ids.status().message()).c_str());
    return 1;
  }
  std::printf("%s\n", absl::StrJoin(*ids, " ").c_str());
  return 0;
}

}  // namespace kvstream::cli
