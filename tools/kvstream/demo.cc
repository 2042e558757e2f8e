// kvstream demo: the end-to-end product on one machine. Starts kvstream-cloud (serving
// `large` and `scout`) and kvstream-edge (scout at the edge) as child processes on free
// loopback ports, asks generated questions in several modes through the edge's gRPC API,
// prints one table, and stops both daemons with SIGTERM.
#include <algorithm>
#include <cstdio>
#include <map>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/quantile.h"
#include "common/base/status.h"
#include "common/eval/tasks.h"
#include "common/model/tokenizer.h"
#include "common/net/ask_client.h"
#include "common/net/grpc_util.h"
#include "common/net/process.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(std::string, models_dir, "testdata/models-2k",
          "Directory with scout/, large/ and tokenizer.json");
ABSL_FLAG(std::string, bin_dir, "",
          "Directory of kvstream-edge and kvstream-cloud (empty: next to this binary)");
ABSL_FLAG(std::string, work_dir, "",
          "Port files and daemon logs (empty: a fresh directory under /tmp)");
ABSL_FLAG(int, daemon_threads, 0,
          "libtorch threads per model worker in each daemon (0: the daemon's default)");
ABSL_FLAG(std::string, demo_projection, "testdata/projections/scout_to_large_2k.safetensors",
          "Projection the cloud serves for the projected rows (kvstream fit-projection)");
ABSL_FLAG(std::string, demo_quality_table, "testdata/quality/tiny2k_mixed.json",
          "Quality table the edge's adaptive mode uses (the demo's last row)");

namespace kvstream::cli {
namespace {

struct Row {
  Row(std::string l, std::string a, kvstream::v1::Policy p)
      : label(std::move(l)), answered_by(std::move(a)), policy(std::move(p)) {}
  std::string label;
  std::string answered_by;
  kvstream::v1::Policy policy;
  double em = 0, f1 = 0, wire = 0, raw = 0;
  std::vector<double> ttft;
  std::map<std::string, int> chosen;  // adaptive: the points the controller picked
  int n = 0, errors = 0;
};

using base::Median;

kvstream::v1::Policy DemoPolicy(kvstream::v1::Mode mode, const char* selector, double retention,
                                const char* spec) {
  kvstream::v1::Policy p;
  p.set_mode(mode);
  p.set_selector(selector);
  p.set_retention(retention);
  p.set_spec(spec);
  p.set_max_tokens(8);
  return p;
}

// The table's rows: every mode, a few precisions and selections, and adaptive.
std::vector<Row> DemoRows() {
  using kvstream::v1::Mode;
  return {
      {"text", "large", DemoPolicy(Mode::MODE_TEXT, "full", 1, "")},
      {"kv lossless", "scout", DemoPolicy(Mode::MODE_KV, "full", 1, "raw")},
      {"kv int8", "scout", DemoPolicy(Mode::MODE_KV, "full", 1, "int8")},
      {"kv q2c 50% + int4", "scout", DemoPolicy(Mode::MODE_KV, "q2c", 0.5, "int4")},
      {"projected int4", "large", DemoPolicy(Mode::MODE_PROJECTED, "full", 1, "int4")},
      {"projected q2c 50%+int4", "large", DemoPolicy(Mode::MODE_PROJECTED, "q2c", 0.5, "int4")},
      {"scout q2c 50%", "large", DemoPolicy(Mode::MODE_SCOUT, "q2c", 0.5, "")},
      {"adaptive", "(chosen)", DemoPolicy(Mode::MODE_ADAPTIVE, "", 0, "")},
  };
}

// The cloud (large, scout and the projection between them) and an edge (scout) on
// loopback; returns their ports.
absl::StatusOr<std::pair<int, int>> StartDaemons(net::ChildProcess& cloud, net::ChildProcess& edge,
                                                 const std::string& work) {
  const std::string models = absl::GetFlag(FLAGS_models_dir);
  const std::string bin =
      absl::GetFlag(FLAGS_bin_dir).empty() ? net::ExecutableDir() : absl::GetFlag(FLAGS_bin_dir);
  const std::string threads = absl::StrCat("--threads=", absl::GetFlag(FLAGS_daemon_threads));
  RETURN_IF_ERROR(
      cloud.Start({bin + "/kvstream-cloud", "--model=large=" + models + "/large",
                   "--model=scout=" + models + "/scout",
                   "--projection=" + absl::GetFlag(FLAGS_demo_projection), "--listen=127.0.0.1:0",
                   "--port_file=" + work + "/cloud.port", "--metrics_address=127.0.0.1:0", threads},
                  work + "/cloud.log"));
  ASSIGN_OR_RETURN(const int cloud_port, cloud.WaitForPortFile(work + "/cloud.port", 60));
  RETURN_IF_ERROR(edge.Start({bin + "/kvstream-edge", "--scout=" + models + "/scout",
                              absl::StrCat("--cloud=127.0.0.1:", cloud_port), "--cloud_model=large",
                              "--listen=127.0.0.1:0", "--port_file=" + work + "/edge.port",
                              "--metrics_address=127.0.0.1:0", threads,
                              "--quality_table=" + absl::GetFlag(FLAGS_demo_quality_table)},
                             work + "/edge.log"));
  ASSIGN_OR_RETURN(const int edge_port, edge.WaitForPortFile(work + "/edge.port", 60));
  return std::make_pair(cloud_port, edge_port);
}

// Asks every question under the row's policy; returns the first error, if any.
absl::Status AskAll(kvstream::v1::EdgeService::Stub& stub,
                    const std::vector<eval::Example>& examples, Row& row) {
  absl::Status first_error;
  for (const eval::Example& ex : examples) {
    kvstream::v1::AskRequest req;
    req.set_context(ex.context);
    req.set_question(ex.question);
    *req.mutable_policy() = row.policy;
    net::AskCall call;
    call.timeout_seconds = 60;
    auto r = net::Ask(stub, req, call);
    ++row.n;
    if (!r.ok()) {
      ++row.errors;
      if (first_error.ok()) first_error = r.status();
      continue;
    }
    row.em += eval::ExactMatch(r->answer, ex.answers);
    row.f1 += eval::TokenF1(r->answer, ex.answers);
    row.wire += static_cast<double>(r->stats.wire_bytes());
    row.raw += static_cast<double>(r->stats.raw_kv_bytes());
    row.ttft.push_back(r->client_ttft_seconds);
    const std::string& decision = r->stats.decision();
    if (!decision.empty()) ++row.chosen[decision.substr(0, decision.find(':'))];
  }
  std::fprintf(stderr, "[demo] %s: %d questions\n", row.label.c_str(), row.n);
  return first_error;
}

void PrintTable(const std::vector<Row>& rows) {
  std::printf("%-24s %-8s %6s %6s %12s %8s %11s\n", "mode", "answers", "EM", "F1", "wire bytes",
              "ratio", "median TTFT");
  for (const Row& r : rows) {
    const int ok = r.n - r.errors;
    std::printf("%-24s %-8s %6.3f %6.3f %12.0f %8.1f %9.1f ms%s\n", r.label.c_str(),
                r.answered_by.c_str(), ok ? r.em / ok : 0.0, ok ? r.f1 / ok : 0.0,
                ok ? r.wire / ok : 0.0, r.wire > 0 ? r.raw / r.wire : 0.0, 1000 * Median(r.ttft),
                r.errors ? absl::StrCat("  (", r.errors, " errors)").c_str() : "");
  }
  for (const Row& r : rows) {
    for (const auto& [point, count] : r.chosen) {
      std::printf("adaptive chose %s for %d questions\n", point.c_str(), count);
    }
  }
  std::printf(
      "\nwire bytes: mean bytes sent edge -> cloud per question; ratio: the answering model's full "
      "KV cache at 16 bits over wire bytes; TTFT as this client saw it.\n");
}

absl::Status Run() {
  ASSIGN_OR_RETURN(const std::string work,
                   net::WorkDir(absl::GetFlag(FLAGS_work_dir), "kvstream-demo"));
  // Questions first, so a bad --kind fails before anything starts.
  ASSIGN_OR_RETURN(auto tok,
                   model::Tokenizer::Load(absl::GetFlag(FLAGS_models_dir) + "/tokenizer.json"));
  ASSIGN_OR_RETURN(const std::vector<eval::Example> examples, GeneratedTasks(*tok));
  std::printf(
      "starting kvstream-cloud (large, scout, scout -> large projection) and kvstream-edge (scout) "
      "on loopback; logs in %s\n",
      work.c_str());
  std::fflush(stdout);
  net::ChildProcess cloud, edge;
  ASSIGN_OR_RETURN(const auto ports, StartDaemons(cloud, edge, work));
  std::printf("cloud on port %d, edge on port %d; %zu %s questions per mode\n\n", ports.first,
              ports.second, examples.size(), absl::GetFlag(FLAGS_kind).c_str());
  std::fflush(stdout);
  std::vector<Row> rows = DemoRows();
  auto stub = kvstream::v1::EdgeService::NewStub(
      net::MakeChannel(absl::StrCat("127.0.0.1:", ports.second)));
  absl::Status first_error;
  for (Row& row : rows) {
    const absl::Status st = AskAll(*stub, examples, row);
    if (first_error.ok()) first_error = st;
  }
  PrintTable(rows);
  // Clean shutdown: SIGTERM, exit 0 expected from both.
  ASSIGN_OR_RETURN(const int edge_exit, edge.Stop(30));
  ASSIGN_OR_RETURN(const int cloud_exit, cloud.Stop(30));
  std::printf("daemons stopped with SIGTERM: edge exit %d, cloud exit %d\n", edge_exit, cloud_exit);
  if (!first_error.ok()) return PrefixStatus("some requests failed, first: ", first_error);
  if (edge_exit != 0 || cloud_exit != 0) {
    return absl::InternalError("a daemon did not exit cleanly");
  }
  return absl::OkStatus();
}

}  // namespace

int RunDemo() { return ExitCode("demo", Run()); }

}  // namespace kvstream::cli
