// kvstream ask: one question to a kvstream-edge daemon. Streams the answer to stdout as
// it arrives, then prints the request's stats.
#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/net/ask_client.h"
#include "common/net/auth.h"
#include "common/net/grpc_util.h"
#include "common/pipeline/mode.h"
#include "edge/policy.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(std::string, edge, "127.0.0.1:50051", "Address of the kvstream-edge daemon");
ABSL_FLAG(std::string, context, "", "File holding the context (\"-\": stdin)");
ABSL_FLAG(std::string, question, "", "The question about the context");
ABSL_FLAG(std::string, token_file, "",
          "File holding the bearer token the edge requires (empty: none)");
ABSL_FLAG(std::string, mode, "",
          "kv, projected, scout, text or adaptive (empty: the edge's default)");
ABSL_FLAG(std::string, selector, "",
          "full, q2c, q2c-question, snapkv, h2o or random (empty: the edge's default)");
ABSL_FLAG(double, retention, 0, "Share of context tokens to keep, (0, 1] (0: the edge's default)");
ABSL_FLAG(std::string, spec, "",
          "kv plan string, e.g. \"int4,L0=f16,zstd=3\", or \"int4,tiers=8\" to send the cache "
          "most important tokens first (with --ttft_target, the cloud answers from the tiers that "
          "arrive in time) (empty: the edge's default)");
ABSL_FLAG(uint32_t, max_tokens, 0, "Answer length cap (0: the edge's default)");
ABSL_FLAG(double, ttft_target, 0,
          "Time-to-first-token target in seconds (0: none): adaptive mode chooses within it; a "
          "plan with tiers= stops sending at it");
ABSL_FLAG(std::string, cloud_model, "",
          "Cloud model for projected, scout and text modes (empty: the edge's default)");
ABSL_FLAG(double, timeout, 60, "Deadline of the call in seconds (0: none)");
ABSL_FLAG(bool, stats_json, false, "Print the stats as JSON instead of text");

namespace kvstream::cli {
namespace {

absl::StatusOr<std::string> ReadContext(const std::string& path) {
  if (path.empty())
    return absl::InvalidArgumentError("--context is required (a file, or - for stdin)");
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read --context file ", path));
    ss << in.rdbuf();
  }
  return ss.str();
}

// The request's policy from the flags (unset fields: the edge's defaults).
absl::StatusOr<kvstream::v1::Policy> PolicyFromFlags() {
  kvstream::v1::Policy p;
  if (!absl::GetFlag(FLAGS_mode).empty()) {
    auto mode = pipeline::ParseMode(absl::GetFlag(FLAGS_mode));
    if (!mode.ok()) return PrefixStatus("--", mode.status());
    p.set_mode(*mode);
  }
  const double target = absl::GetFlag(FLAGS_ttft_target);
  if (!(target >= 0 && target < 1e6)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ttft_target: expected seconds >= 0, found ", target));
  }
  p.set_selector(absl::GetFlag(FLAGS_selector));
  p.set_retention(absl::GetFlag(FLAGS_retention));
  p.set_spec(absl::GetFlag(FLAGS_spec));
  p.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  p.set_cloud_model(absl::GetFlag(FLAGS_cloud_model));
  p.set_ttft_target_seconds(target);
  return p;
}

}  // namespace

int RunAsk() {
  auto context = ReadContext(absl::GetFlag(FLAGS_context));
  if (!context.ok()) {
    std::fprintf(stderr, "kvstream ask: %s\n", std::string(context.status().message()).c_str());
    return 2;
  }
  kvstream::v1::AskRequest req;
  req.set_context(*context);
  req.set_question(absl::GetFlag(FLAGS_question));
  auto policy = PolicyFromFlags();
  if (!policy.ok()) {
    std::fprintf(stderr, "kvstream ask: %s\n", std::string(policy.status().message()).c_str());
    return 2;
  }
  *req.mutable_policy() = *policy;

  auto channel = DaemonChannel(absl::GetFlag(FLAGS_edge));
  if (!channel.ok()) {
    std::fprintf(stderr, "kvstream ask: %s\n", std::string(channel.status().message()).c_str());
    return 2;
  }
  auto stub = kvstream::v1::EdgeService::NewStub(*channel);
  net::AskCall call;
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    auto token = net::ReadBearerToken(absl::GetFlag(FLAGS_token_file));
    if (!token.ok())
      return ExitCode("ask", absl::InvalidArgumentError(
                                 absl::StrCat("--token_file: ", token.status().message())));
    call.bearer_token = *token;
  }
  call.timeout_seconds = absl::GetFlag(FLAGS_timeout);
  call.on_token = [](const kvstream::v1::Token& t) {
    std::fwrite(t.text().data(), 1, t.text().size(), stdout);
    std::fflush(stdout);
  };
  auto r = net::Ask(*stub, req, call);
  std::printf("\n");
  if (!r.ok()) {
    std::fprintf(stderr, "kvstream ask: %s: %s\n",
                 absl::StatusCodeToString(r.status().code()).c_str(),
                 std::string(r.status().message()).c_str());
    return 1;
  }
  const kvstream::v1::RequestStats& s = r->stats;
  if (absl::GetFlag(FLAGS_stats_json)) {
    std::string json;
    google::protobuf::util::JsonPrintOptions o;
    o.add_whitespace = true;
    o.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(s, &json, o);
    std::printf("%s", json.c_str());
    return 0;
  }
  const auto& st = s.stages();
  std::printf("mode %s, selector %s, spec %s\n", pipeline::ModeName(s.mode()), s.selector().c_str(),
              s.spec().empty() ? "-" : s.spec().c_str());
  std::printf("context tokens %llu, kept %llu\n",
              static_cast<unsigned long long>(s.context_tokens()),
              static_cast<unsigned long long>(s.kept_tokens()));
  if (s.tiers_sent() > 0) {
    std::printf("progressive: %u tiers sent, the cloud answered from %llu slots\n", s.tiers_sent(),
                static_cast<unsigned long long>(s.slots_used()));
  }
  if (!s.answer_check().empty()) std::printf("answer check: %s\n", s.answer_check().c_str());
  std::printf("raw KV bytes (16-bit) %llu, wire bytes %llu, ratio %.2f\n",
              static_cast<unsigned long long>(s.raw_kv_bytes()),
              static_cast<unsigned long long>(s.wire_bytes()), s.compression_ratio());
  std::printf(
      "stages (s): edge_queue %.4f tokenize %.4f prefill %.4f select %.4f encode %.4f transfer "
      "%.4f "
      "cloud_queue %.4f rebuild %.4f project %.4f first_token %.4f decode %.4f\n",
      st.edge_queue(), st.tokenize(), st.prefill(), st.select(), st.encode(), st.transfer(),
      st.cloud_queue(), st.rebuild(), st.project(), st.first_token(), st.decode());
  std::printf("ttft %.4f s (edge), %.4f s (this client); %u tokens, stop: %s\n", s.ttft_seconds(),
              r->client_ttft_seconds, s.tokens_generated(), s.stop_reason().c_str());
  return 0;
}

}  // namespace kvstream::cli
