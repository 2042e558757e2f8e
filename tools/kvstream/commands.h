// Subcommands of the `kvstream` CLI. Each lives in its own file, declares its flags
// there, and returns a process exit code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, words);
ABSL_DECLARE_FLAG(uint64_t, task_seed);
ABSL_DECLARE_FLAG(std::string, kind);
ABSL_DECLARE_FLAG(int, n);
ABSL_DECLARE_FLAG(int, records);
ABSL_DECLARE_FLAG(int, target_tokens);
ABSL_DECLARE_FLAG(bool, single_token_names);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_server_name);

namespace kvstream::cli {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);  // positional args after the flags
};

int RunTokenize(const std::vector<std::string>& args);
int RunTrainTiny(const std::vector<std::string>& args);
int RunEval(const std::vector<std::string>& args);
int RunGenTasks(const std::vector<std::string>& args);
int RunAsk(const std::vector<std::string>& args);
int RunDemo(const std::vector<std::string>& args);
int RunHealth(const std::vector<std::string>& args);
int RunProfile(const std::vector<std::string>& args);

}  // namespace kvstream::cli
