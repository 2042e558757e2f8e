// kvstream: the command-line tool. `kvstream COMMAND [--flags]`; `kvstream COMMAND --help`
// lists a command's flags.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/memory.h"
#include "tools/kvstream/commands.h"

namespace {

using kvstream::cli::Command;

// Without the model runtime (-DKVSTREAM_BUILD_MODEL=OFF) only the client commands exist.
const Command kCommands[] = {
    {"tokenize", "UTF-8 text on stdin -> token ids (or ids -> text with --decode)",
     kvstream::cli::RunTokenize},
    {"gen-tasks", "write generated retrieval tasks as SQuAD v2 JSON", kvstream::cli::RunGenTasks},
    {"ask", "one question to a kvstream-edge daemon: streams the answer, then the stats",
     kvstream::cli::RunAsk},
    {"health", "asks a daemon's gRPC health service; exit 0 when SERVING",
     kvstream::cli::RunHealth},
    {"make-model",
     "writes a random-weight model with a real shape (Qwen2.5, Qwen3, Llama 3.2) for speed work",
     kvstream::cli::RunMakeModel},
#ifdef KVSTREAM_CLI_MODEL_COMMANDS
    {"train-tiny", "train the tiny tokenizer and scout/large models on synthetic tasks",
     kvstream::cli::RunTrainTiny},
    {"eval", "quality vs bandwidth of selectors x retentions x plans, in process",
     kvstream::cli::RunEval},
    {"demo", "starts cloud + edge daemons on loopback with the tiny models and compares modes",
     kvstream::cli::RunDemo},
    {"profile",
     "per-layer diagnostic: one layer quantized / one layer protected at a time; recommends a plan",
     kvstream::cli::RunProfile},
    {"fit-projection", "fits the maps from a scout's KV cache to a large model's (projected mode)",
     kvstream::cli::RunFitProjection},
    {"compare-models", "per-layer K/V CKA and selection overlap between a scout and a large model",
     kvstream::cli::RunCompareModels},
#endif
};

void PrintCommands(FILE* out) {
  std::fprintf(out, "usage: kvstream COMMAND [--flags]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-15s %s\n", c.name, c.summary);
  std::fprintf(out, "\n`kvstream COMMAND --help` lists the command's flags.\n");
}

}  // namespace

namespace kvstream::cli {
int ExitCode(const char* command, const absl::Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "kvstream %s: %s\n", command, std::string(status.message()).c_str());
  return 1;
}
}  // namespace kvstream::cli

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "help") == 0 ||
      std::strcmp(argv[1], "-h") == 0) {
    PrintCommands(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const Command* command = nullptr;
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) == 0) command = &c;
  }
  if (command == nullptr) {
    std::fprintf(stderr, "kvstream: unknown command '%s'\n\n", argv[1]);
    PrintCommands(stderr);
    return 2;
  }
  // Help shows only the flags declared in the command's own source file.
  // (profile is part of eval.cc and shares its flags.)
  std::string file =
      absl::StrCat("tools/kvstream/",
                   std::strcmp(command->name, "profile") == 0 ? "eval" : command->name, ".cc");
  std::replace(file.begin(), file.end(), '-', '_');
  absl::FlagsUsageConfig config;
  config.contains_helpshort_flags = [file](absl::string_view f) {
    return absl::EndsWith(f, file) || absl::EndsWith(f, "tools/kvstream/flags.cc");
  };
  config.contains_help_flags = config.contains_helpshort_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(absl::StrCat("kvstream ", command->name, ": ", command->summary));
  std::vector<char*> rest = absl::ParseCommandLine(argc - 1, argv + 1);
  if (rest.size() > 1) {
    std::fprintf(stderr,
                 "kvstream %s: unexpected argument '%s'; every input is a flag%s (see --help)\n",
                 command->name, rest[1],
                 std::strcmp(command->name, "tokenize") == 0 ? ", text comes on stdin" : "");
    return 2;
  }
  (void)kvstream::base::KeepFreedMemoryForReuse();  // model commands prefill again and again
  return command->run();
}
