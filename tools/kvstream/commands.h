// Subcommands of the `kvstream` CLI. Each lives in its own file, declares its flags
// there, and returns a process exit code. Every input is a flag (or stdin); main()
// refuses positional arguments before a command runs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/eval/tasks.h"
#include "common/model/tokenizer.h"

ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(std::string, tokenizer);
ABSL_DECLARE_FLAG(std::string, words);
ABSL_DECLARE_FLAG(uint64_t, task_seed);
ABSL_DECLARE_FLAG(std::string, kind);
ABSL_DECLARE_FLAG(int, n);
ABSL_DECLARE_FLAG(int, threads);
ABSL_DECLARE_FLAG(std::string, records);
ABSL_DECLARE_FLAG(std::string, target_tokens);
ABSL_DECLARE_FLAG(bool, single_token_names);
ABSL_DECLARE_FLAG(std::string, projection);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_server_name);

namespace grpc {
class Channel;
}

namespace kvstream::cli {

struct Command {
  const char* name;
  const char* summary;
  int (*run)();  // positional args after the flags
};

// A channel to a daemon at `address`, over TLS when --tls_ca and friends say so.
absl::StatusOr<std::shared_ptr<grpc::Channel>> DaemonChannel(const std::string& address);

// The generated tasks the shared flags ask for (--kind, --n, --records, --target_tokens,
// --task_seed, --words, --single_token_names), values sized by `tokenizer`; an unknown
// --kind is INVALID_ARGUMENT.
absl::StatusOr<std::vector<eval::Example>> GeneratedTasks(const model::Tokenizer& tokenizer);

// "single, 64-80 records" / "needle, 512 tokens": the generated tasks the flags ask for.
std::string TaskShape();

// Prints "kvstream COMMAND: message" for a failed `status` and returns 1; 0 when OK.
int ExitCode(const char* command, const absl::Status& status);

int RunTokenize();
int RunTrainTiny();
int RunEval();
int RunGenTasks();
int RunAsk();
int RunDemo();
int RunHealth();
int RunProfile();
int RunFitProjection();
int RunCompareModels();
int RunMakeModel();

}  // namespace kvstream::cli
