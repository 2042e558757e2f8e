// kvstream gen-tasks: writes generated retrieval tasks as SQuAD v2 JSON.
#include <cstdio>
#include <fstream>

#include "absl/flags/flag.h"
#include "common/eval/tasks.h"
#include "common/model/tokenizer.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(std::string, task_kind, "single",
          "single, multi, multi_lives or needle (see common/eval/tasks.h)");
ABSL_FLAG(int, count, 100, "Number of examples");
ABSL_FLAG(int, num_records, 40, "Records per single/multi context");
ABSL_FLAG(int, length, 512, "Needle context length in tokens (counted with --tokenizer)");
ABSL_FLAG(
    std::string, tokenizer_json, "testdata/models/tokenizer.json",
    "Tokenizer that counts tokens and picks single-token values; empty: numbers, ~4 chars a token");
ABSL_FLAG(std::string, output, "", "Output file (default: stdout)");

namespace kvstream::cli {

int RunGenTasks() {
  const std::string kind = absl::GetFlag(FLAGS_task_kind);
  if (!eval::IsGeneratedKind(kind)) {
    std::fprintf(stderr, "kvstream gen-tasks: --task_kind must be %s; found '%s'\n",
                 eval::kGeneratedKinds, kind.c_str());
    return 2;
  }
  auto words = eval::LoadWords(absl::GetFlag(FLAGS_words));
  if (!words.ok()) {
    std::fprintf(stderr, "kvstream gen-tasks: %s\n", std::string(words.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<model::Tokenizer> tok;
  eval::TokenCounter counter;
  absl::Status encode_error;  // the first text the tokenizer refused
  if (!absl::GetFlag(FLAGS_tokenizer_json).empty()) {
    auto t = model::Tokenizer::Load(absl::GetFlag(FLAGS_tokenizer_json));
    if (!t.ok()) {
      std::fprintf(stderr, "kvstream gen-tasks: %s\n", std::string(t.status().message()).c_str());
      return 1;
    }
    tok = std::move(*t);
    counter = model::CountTokens(*tok, encode_error);
  }
  eval::TaskGenerator gen(*words, counter);
  gen.set_single_token_names(absl::GetFlag(FLAGS_single_token_names));
  eval::TaskOptions o;
  o.kind = kind;
  o.num_examples = absl::GetFlag(FLAGS_count);
  o.num_records = absl::GetFlag(FLAGS_num_records);
  o.target_tokens = absl::GetFlag(FLAGS_length);
  o.seed = absl::GetFlag(FLAGS_task_seed);
  const std::vector<eval::Example> examples = gen.Generate(o);
  if (!encode_error.ok()) {
    std::fprintf(stderr, "kvstream gen-tasks: tokenizing tasks: %s\n",
                 std::string(encode_error.message()).c_str());
    return 1;
  }
  const std::string json = eval::ToSquadJson(examples);
  if (absl::GetFlag(FLAGS_output).empty()) {
    std::fwrite(json.data(), 1, json.size(), stdout);
  } else {
    std::ofstream(absl::GetFlag(FLAGS_output)) << json;
  }
  return 0;
}

}  // namespace kvstream::cli
