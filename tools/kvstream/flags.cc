// Flags shared by several kvstream commands (one binary has one flag namespace).
#include <cstdint>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/net/grpc_util.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(std::string, out, "",
          "train-tiny: output directory for tokenizer.json, scout/ and large/ (default "
          "testdata/models); make-model: the model directory to write (required)");
ABSL_FLAG(std::string, tokenizer, "",
          "A Hugging Face tokenizer.json. tokenize: the one to use (required); make-model: copied "
          "into the model (default testdata/models/tokenizer.json)");
ABSL_FLAG(std::string, words, "/usr/share/dict/words",
          "Word list for generated tasks (names, values, distractors; Debian's wamerican)");
ABSL_FLAG(uint64_t, task_seed, 7, "Seed of generated evaluation tasks (training uses other seeds)");
ABSL_FLAG(
    std::string, kind, "single",
    "Generated task kind: single, multi (answered \"<town>: <value>\"), multi_lives or needle");
ABSL_FLAG(int, n, 40, "Examples (questions) to run");
ABSL_FLAG(int, threads, 0, "train-tiny, eval, profile: libtorch threads (0: every core)");
ABSL_FLAG(std::string, records, "40",
          "Records per generated single/multi context: N, or a range A-B each question draws from "
          "(so a cell "
          "samples many prompt lengths)");
ABSL_FLAG(std::string, target_tokens, "512",
          "Context length of generated needle tasks in tokens: N, or a range A-B each question "
          "draws from");
ABSL_FLAG(bool, single_token_names, true,
          "Generated tasks draw record names from the words the tokenizer keeps whole, as values "
          "are (the "
          "tiny models are trained so); needs at least 150 such words, else names come from the "
          "whole list");
ABSL_FLAG(std::string, projection, "",
          "fit-projection: the projection file to write; eval: the one projected mode uses (scout "
          "-> --model)");
ABSL_FLAG(std::string, tls_ca, "", "ask/health: reach the daemon over TLS, trusting this PEM CA");
ABSL_FLAG(std::string, tls_cert, "",
          "ask/health: client certificate (PEM) for a daemon that requires one");
ABSL_FLAG(std::string, tls_key, "", "ask/health: PEM private key for --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "ask/health: name to check the daemon's certificate against");

namespace kvstream::cli {

absl::StatusOr<std::vector<eval::Example>> GeneratedTasks(const model::Tokenizer& tokenizer) {
  eval::TaskOptions o;
  o.kind = absl::GetFlag(FLAGS_kind);
  if (!eval::IsGeneratedKind(o.kind)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kind: expected ", eval::kGeneratedKinds, "; found '", o.kind, "'"));
  }
  o.num_examples = absl::GetFlag(FLAGS_n);
  RETURN_IF_ERROR(eval::ParseRange(absl::GetFlag(FLAGS_records), "--records", &o.num_records,
                                   &o.num_records_max));
  RETURN_IF_ERROR(eval::ParseRange(absl::GetFlag(FLAGS_target_tokens), "--target_tokens",
                                   &o.target_tokens, &o.target_tokens_max));
  o.seed = absl::GetFlag(FLAGS_task_seed);
  auto words = eval::LoadWords(absl::GetFlag(FLAGS_words));
  if (!words.ok()) return words.status();
  absl::Status error;
  eval::TaskGenerator gen(*words, model::CountTokens(tokenizer, error));
  gen.set_single_token_names(absl::GetFlag(FLAGS_single_token_names));
  std::vector<eval::Example> examples = gen.Generate(o);
  if (!error.ok())
    return absl::Status(error.code(), absl::StrCat("tokenizing tasks: ", error.message()));
  return examples;
}

std::string TaskShape() {
  const std::string kind = absl::GetFlag(FLAGS_kind);
  return kind == "needle" ? absl::StrCat(kind, ", ", absl::GetFlag(FLAGS_target_tokens), " tokens")
                          : absl::StrCat(kind, ", ", absl::GetFlag(FLAGS_records), " records");
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> DaemonChannel(const std::string& address) {
  auto channel = net::MakeChannel(
      address, {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
                absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_server_name)});
  if (!channel.ok())
    return absl::InvalidArgumentError(absl::StrCat("--tls_*: ", channel.status().message()));
  return channel;
}

}  // namespace kvstream::cli
