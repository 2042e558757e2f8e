// kvstream-e2e-bench: TTFT and quality against bandwidth, end to end. Starts one
// kvstream-cloud, then for every link (a rate x RTT, or a bandwidth trace) a
// kvstream-edge whose uplink is shaped to it, and asks the same generated questions
// under each policy through the edge's gRPC API. Policies are interleaved (question by
// question, in an order that rotates), so a slow spell of the machine falls on all of
// them alike instead of on whichever policy was running. Writes one CSV row per
// link x policy: EM/F1, mean wire bytes, TTFT median and p95 as the client saw it, the
// share of requests within the SLO, where the time went (edge, transfer and cloud
// stages, means) and, for adaptive, the cost model's mean predicted TTFT. Results with
// --emulate_* set are marked emulated.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/base/quantile.h"
#include "common/base/status.h"
#include "common/eval/tasks.h"
#include "common/model/tokenizer.h"
#include "common/net/ask_client.h"
#include "common/net/grpc_util.h"
#include "common/net/process.h"

ABSL_FLAG(std::string, rates, "1,3,10,30,100,300,1000", "Uplink rates in Mbit/s, comma separated");
ABSL_FLAG(std::string, rtts, "0,20,100", "Round-trip times in ms, comma separated");
ABSL_FLAG(std::string, traces,
          "bench/traces/steady_20mbps.txt,bench/traces/cellular.txt,bench/traces/outages.txt",
          "Bandwidth traces to replay (run at RTT 20 ms), comma separated; empty: none");
ABSL_FLAG(
    std::string, policies,
    "text,kv-f16,kv-int8,kv-int4,kv-mixed,kv-q2c50-int4,projected-int4,scout,adaptive,adaptive-slo",
    "Policies, comma separated, from: text, kv-f16, kv-int8, kv-int4, kv-mixed (layer 0 at f16, "
    "rest INT4), "
    "kv-q2c50-int4, scout (Q2C 50%), adaptive (lowest TTFT at >= 90% of the best quality), "
    "adaptive-slo "
    "(best quality within --slo), progressive-f16 and progressive-int4 (the whole cache in 8 "
    "importance tiers by Q2C, sent until --slo would be missed)");
ABSL_FLAG(int, n, 10, "Questions per link x policy");
ABSL_FLAG(
    std::string, kind, "needle",
    "Generated task kind: single, multi (answered \"<town>: <value>\"), multi_lives or needle");
ABSL_FLAG(std::string, target_tokens, "512", "Needle context length in tokens: N or a range A-B");
ABSL_FLAG(std::string, records, "20", "Records per single/multi context: N or a range A-B");
ABSL_FLAG(double, slo, 0.5, "TTFT SLO in seconds (adaptive-slo's target too)");
ABSL_FLAG(std::string, models_dir, "testdata/models-2k", "Directory with scout/ and large/");
ABSL_FLAG(std::string, projection, "testdata/projections/scout_to_large_2k.safetensors",
          "Projection the cloud serves for projected policies (scout -> large)");
ABSL_FLAG(int, estimate_steps, 1,
          "Edge --estimate_steps: adaptive checks its kv plan on the scout first (0: off)");
ABSL_FLAG(bool, estimate_history, true,
          "Edge --estimate_history: price points down by their recent rejection share");
ABSL_FLAG(int, estimate_selection_steps, 3,
          "Edge --estimate_selection_steps: the estimate's least steps for a plan that keeps "
          "a selection (0: --estimate_steps alone)");
ABSL_FLAG(double, kv_min_confidence, -1,
          "Edge --kv_min_confidence: adaptive does not answer with the scout when it is less "
          "sure of its first answer token than this (0: off; -1: the gate the quality table "
          "was measured with)");
ABSL_FLAG(std::string, quality_table, "testdata/quality/tiny2k_mixed.json",
          "Quality table for adaptive");
ABSL_FLAG(double, emulate_prefill_tps, 0, "Cloud: emulate this prefill rate (tokens/s; 0: real)");
ABSL_FLAG(double, emulate_decode_tps, 0, "Cloud: emulate this decode rate (tokens/s; 0: real)");
ABSL_FLAG(std::string, csv, "bench/results/e2e.csv", "Output CSV (rewritten after every link)");
ABSL_FLAG(std::string, edge_flags, "",
          "Extra kvstream-edge flags, comma separated (e.g. --layerwise=false, --dtype=bf16)");
ABSL_FLAG(std::string, cloud_flags, "", "Extra kvstream-cloud flags, comma separated");
ABSL_FLAG(std::string, work_dir, "",
          "Port files and daemon logs (empty: a fresh directory under /tmp)");

namespace {

using kvstream::net::ChildProcess;

struct Link {
  std::string name;
  double mbps = 0;
  double rtt_ms = 0;
  std::string trace;
};

struct Result {
  std::string link, policy;
  double mbps = 0, rtt_ms = 0;
  int n = 0, errors = 0;
  double em = 0, f1 = 0, wire = 0;
  std::vector<double> ttft;
  std::map<std::string, int> modes;
  // Sums over successful requests of the edge's stage times (tokenize through encode),
  // the transfer, the cloud's (rebuild and first token), and of predicted TTFTs.
  double edge_s = 0, transfer_s = 0, cloud_s = 0, predicted_s = 0;
  int predicted_n = 0;
  double estimate_s = 0;  // of which the adaptive quality estimate (in edge_s)
  // Progressive policies: tiers whose chunks were all sent, summed over requests.
  double tiers = 0;
  int tiers_n = 0;
};

using kvstream::base::Quantile;

kvstream::v1::Policy PolicyFor(const std::string& name, double slo) {
  kvstream::v1::Policy p;
  p.set_max_tokens(8);
  p.set_selector("full");
  if (name == "text") {
    p.set_mode(kvstream::v1::MODE_TEXT);
  } else if (name == "scout") {
    p.set_mode(kvstream::v1::MODE_SCOUT);
    p.set_selector("q2c");
    p.set_retention(0.5);
  } else if (name == "projected-int4") {
    // The large model answers from the scout's INT4 cache.
    p.set_mode(kvstream::v1::MODE_PROJECTED);
    p.set_spec("int4");
  } else if (name == "adaptive") {
    // Lowest predicted TTFT among points at >= 90% of the table's best quality.
    p.set_mode(kvstream::v1::MODE_ADAPTIVE);
  } else if (name == "progressive-f16" || name == "progressive-int4") {
    // Every context token ranked by Q2C, in 8 tiers; the edge stops before a tier that
    // would miss the SLO and the cloud answers from the tiers it has.
    p.set_mode(kvstream::v1::MODE_KV);
    p.set_selector("q2c");
    p.set_retention(1);
    p.set_spec(name == "progressive-f16" ? "f16,tiers=8" : "int4,tiers=8");
    p.set_ttft_target_seconds(slo);
  } else if (name == "adaptive-slo") {
    // Best expected quality within the SLO.
    p.set_mode(kvstream::v1::MODE_ADAPTIVE);
    p.set_ttft_target_seconds(slo);
  } else {
    p.set_mode(kvstream::v1::MODE_KV);
    if (name == "kv-f16") p.set_spec("f16");
    if (name == "kv-int8") p.set_spec("int8");
    if (name == "kv-int4") p.set_spec("int4");
    if (name == "kv-mixed") p.set_spec("int4,L0=f16");
    if (name == "kv-q2c50-int4") {
      p.set_spec("int4");
      p.set_selector("q2c");
      p.set_retention(0.5);
    }
  }
  return p;
}

std::string Csv(const std::vector<Result>& rs, double slo, bool emulated) {
  std::string out =
      "link,rate_mbps,rtt_ms,policy,n,errors,exact_match,f1,wire_bytes,ttft_median_s,ttft_p95_s,"
      "slo_s,slo_hit_rate,"
      "modes,emulated,edge_s,transfer_s,cloud_s,predicted_ttft_s,estimate_s,tiers_sent\n";
  for (const Result& r : rs) {
    const int ok = r.n - r.errors;
    int hits = 0;
    for (double t : r.ttft) hits += t <= slo;
    std::string modes;
    // Quoted in the CSV: a plan such as "int4,L0=f16" has a comma.
    for (const auto& [m, c] : r.modes) absl::StrAppend(&modes, modes.empty() ? "" : " ", m, ":", c);
    const double d = ok ? ok : 1;
    absl::StrAppendFormat(&out,
                          "%s,%g,%g,%s,%d,%d,%.4f,%.4f,%.0f,%.5f,%.5f,%g,%.4f,\"%s\",%d,%.5f,%.5f,%"
                          ".5f,%.5f,%.5f,%.3f\n",
                          r.link, r.mbps, r.rtt_ms, r.policy, r.n, r.errors, r.em / d, r.f1 / d,
                          r.wire / d, Quantile(r.ttft, 0.5), Quantile(r.ttft, 0.95), slo,
                          r.n ? static_cast<double>(hits) / r.n : 0.0, modes, emulated ? 1 : 0,
                          r.edge_s / d, r.transfer_s / d, r.cloud_s / d,
                          r.predicted_n ? r.predicted_s / r.predicted_n : 0.0, r.estimate_s / d,
                          r.tiers_n ? r.tiers / r.tiers_n : 0.0);
  }
  return out;
}

// --rates x --rtts, then every --traces file (RTT 20 ms).
absl::StatusOr<std::vector<Link>> ParseLinks() {
  std::vector<Link> links;
  for (absl::string_view rtt : absl::StrSplit(absl::GetFlag(FLAGS_rtts), ',', absl::SkipEmpty())) {
    for (absl::string_view rate :
         absl::StrSplit(absl::GetFlag(FLAGS_rates), ',', absl::SkipEmpty())) {
      Link l;
      if (!absl::SimpleAtod(rate, &l.mbps) || !absl::SimpleAtod(rtt, &l.rtt_ms) || l.mbps <= 0 ||
          l.rtt_ms < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("--rates/--rtts: bad value '", rate, "' or '", rtt, "'"));
      }
      l.name = absl::StrCat(rate, "Mbps-", rtt, "ms");
      links.push_back(l);
    }
  }
  for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_traces), ',', absl::SkipEmpty())) {
    Link l;
    l.trace = std::string(t);
    l.rtt_ms = 20;
    l.name = std::filesystem::path(l.trace).stem().string();
    links.push_back(l);
  }
  return links;
}

// The questions: --kind tasks over --records / --target_tokens ranges, single-token
// names as the tiny models are trained.
absl::StatusOr<std::vector<kvstream::eval::Example>> Examples(const std::string& models) {
  ASSIGN_OR_RETURN(auto tok, kvstream::model::Tokenizer::Load(models + "/tokenizer.json"));
  ASSIGN_OR_RETURN(auto words, kvstream::eval::LoadWords());
  absl::Status count_error;
  kvstream::eval::TaskGenerator gen(words, kvstream::model::CountTokens(*tok, count_error));
  gen.set_single_token_names(true);
  kvstream::eval::TaskOptions o;
  o.kind = absl::GetFlag(FLAGS_kind);
  if (!kvstream::eval::IsGeneratedKind(o.kind)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kind: expected ", kvstream::eval::kGeneratedKinds, "; found '", o.kind, "'"));
  }
  o.num_examples = absl::GetFlag(FLAGS_n);
  RETURN_IF_ERROR(kvstream::eval::ParseRange(absl::GetFlag(FLAGS_records), "--records",
                                             &o.num_records, &o.num_records_max));
  RETURN_IF_ERROR(kvstream::eval::ParseRange(absl::GetFlag(FLAGS_target_tokens), "--target_tokens",
                                             &o.target_tokens, &o.target_tokens_max));
  o.seed = 7;
  std::vector<kvstream::eval::Example> examples = gen.Generate(o);
  if (!count_error.ok()) return kvstream::PrefixStatus("tokenizing tasks: ", count_error);
  return examples;
}

// An edge for `link`: its emulated uplink and delay, and the adaptive flags.
std::vector<std::string> EdgeArgs(const Link& link, int cloud_port, const std::string& port_file) {
  const std::string models = absl::GetFlag(FLAGS_models_dir);
  std::vector<std::string> args = {
      kvstream::net::ExecutableDir() + "/kvstream-edge",
      "--scout=" + models + "/scout",
      absl::StrCat("--cloud=127.0.0.1:", cloud_port),
      "--cloud_model=large",
      "--listen=127.0.0.1:0",
      "--port_file=" + port_file,
      "--metrics_address=",
      absl::StrCat("--one_way_delay_ms=", link.rtt_ms / 2),
      "--quality_table=" + absl::GetFlag(FLAGS_quality_table),
      absl::StrCat("--estimate_steps=", absl::GetFlag(FLAGS_estimate_steps)),
      absl::StrCat("--estimate_selection_steps=", absl::GetFlag(FLAGS_estimate_selection_steps)),
      absl::StrCat("--estimate_history=", absl::GetFlag(FLAGS_estimate_history)),
      absl::StrCat("--kv_min_confidence=", absl::GetFlag(FLAGS_kv_min_confidence)),
      "--chunk_bytes=65536",
      absl::StrCat("--initial_rtt_ms=", link.rtt_ms)};
  if (link.trace.empty()) {
    args.push_back(absl::StrCat("--uplink_mbps=", link.mbps));
    args.push_back(absl::StrCat("--initial_bandwidth_mbps=", link.mbps));
  } else {
    args.push_back("--uplink_trace=" + link.trace);
    args.push_back("--initial_bandwidth_mbps=10");
  }
  for (absl::string_view f :
       absl::StrSplit(absl::GetFlag(FLAGS_edge_flags), ',', absl::SkipEmpty())) {
    args.emplace_back(f);
  }
  return args;
}

// Folds one answer into its policy's result.
void Record(const kvstream::net::AskResult& a, const kvstream::eval::Example& ex, Result& r) {
  r.em += kvstream::eval::ExactMatch(a.answer, ex.answers);
  r.f1 += kvstream::eval::TokenF1(a.answer, ex.answers);
  r.wire += static_cast<double>(a.stats.wire_bytes());
  r.ttft.push_back(a.client_ttft_seconds);
  const auto& s = a.stats;
  const auto& st = s.stages();
  r.edge_s += st.tokenize() + st.prefill() + st.select() + st.encode() + st.estimate();
  r.estimate_s += st.estimate();
  r.transfer_s += st.transfer();
  r.cloud_s += st.rebuild() + st.project() + st.first_token();
  if (s.predicted_ttft_seconds() > 0) {
    r.predicted_s += s.predicted_ttft_seconds();
    ++r.predicted_n;
  }
  if (s.tiers_sent() > 0) {
    r.tiers += s.tiers_sent();
    ++r.tiers_n;
  }
  std::string mode = s.mode() == kvstream::v1::MODE_KV
                         ? absl::StrCat("kv/", s.selector(), "/", s.spec())
                     : s.mode() == kvstream::v1::MODE_PROJECTED
                         ? absl::StrCat("projected/", s.selector(), "/", s.spec())
                     : s.mode() == kvstream::v1::MODE_SCOUT ? "scout"
                                                            : "text";
  ++r.modes[mode];
}

// Every question under every policy through an edge on `link`; the policies take turns
// going first.
absl::StatusOr<std::vector<Result>> RunLink(const Link& link, int cloud_port,
                                            const std::vector<kvstream::eval::Example>& examples,
                                            const std::vector<std::string>& policies,
                                            const std::string& work) {
  ChildProcess edge;
  const std::string port_file = absl::StrCat(work, "/edge-", link.name, ".port");
  RETURN_IF_ERROR(edge.Start(EdgeArgs(link, cloud_port, port_file),
                             absl::StrCat(work, "/edge-", link.name, ".log")));
  ASSIGN_OR_RETURN(const int edge_port, edge.WaitForPortFile(port_file, 60));
  auto stub = kvstream::v1::EdgeService::NewStub(
      kvstream::net::MakeChannel(absl::StrCat("127.0.0.1:", edge_port)));
  std::vector<Result> per_policy(policies.size());
  for (size_t p = 0; p < policies.size(); ++p) {
    per_policy[p].link = link.name;
    per_policy[p].policy = policies[p];
    per_policy[p].mbps = link.mbps;
    per_policy[p].rtt_ms = link.rtt_ms;
  }
  for (size_t q = 0; q < examples.size(); ++q) {
    for (size_t k = 0; k < policies.size(); ++k) {
      const size_t p = (q + k) % policies.size();  // rotate who goes first
      kvstream::v1::AskRequest req;
      req.set_context(examples[q].context);
      req.set_question(examples[q].question);
      *req.mutable_policy() = PolicyFor(policies[p], absl::GetFlag(FLAGS_slo));
      kvstream::net::AskCall call;
      call.timeout_seconds = 120;
      auto a = kvstream::net::Ask(*stub, req, call);
      ++per_policy[p].n;
      if (a.ok()) {
        Record(*a, examples[q], per_policy[p]);
        continue;
      }
      ++per_policy[p].errors;
      std::fprintf(stderr, "[bench] %s %s: %s\n", link.name.c_str(), policies[p].c_str(),
                   std::string(a.status().message()).c_str());
    }
  }
  for (const Result& r : per_policy) {
    std::fprintf(stderr, "[bench] %-16s %-14s TTFT median %.3f s, F1 %.2f\n", link.name.c_str(),
                 r.policy.c_str(), Quantile(r.ttft, 0.5),
                 r.n - r.errors ? r.f1 / (r.n - r.errors) : 0.0);
  }
  ASSIGN_OR_RETURN(const int code, edge.Stop(30));
  if (code != 0) {
    return absl::InternalError(absl::StrCat("edge for ", link.name, " exited with ", code));
  }
  return per_policy;
}

absl::Status Run() {
  const std::string models = absl::GetFlag(FLAGS_models_dir);
  ASSIGN_OR_RETURN(const std::string work,
                   kvstream::net::WorkDir(absl::GetFlag(FLAGS_work_dir), "kvstream-bench"));
  const double slo = absl::GetFlag(FLAGS_slo);
  const bool emulated =
      absl::GetFlag(FLAGS_emulate_prefill_tps) > 0 || absl::GetFlag(FLAGS_emulate_decode_tps) > 0;
  ASSIGN_OR_RETURN(const std::vector<Link> links, ParseLinks());
  const std::vector<std::string> policies =
      absl::StrSplit(absl::GetFlag(FLAGS_policies), ',', absl::SkipEmpty());
  ASSIGN_OR_RETURN(const std::vector<kvstream::eval::Example> examples, Examples(models));

  std::vector<std::string> cloud_args = {
      kvstream::net::ExecutableDir() + "/kvstream-cloud",
      "--model=large=" + models + "/large",
      "--model=scout=" + models + "/scout",
      "--listen=127.0.0.1:0",
      "--port_file=" + work + "/cloud.port",
      "--metrics_address=",
      absl::StrCat("--emulate_prefill_tps=", absl::GetFlag(FLAGS_emulate_prefill_tps)),
      absl::StrCat("--emulate_decode_tps=", absl::GetFlag(FLAGS_emulate_decode_tps))};
  if (!absl::GetFlag(FLAGS_projection).empty()) {
    cloud_args.push_back("--projection=" + absl::GetFlag(FLAGS_projection));
  }
  for (absl::string_view f :
       absl::StrSplit(absl::GetFlag(FLAGS_cloud_flags), ',', absl::SkipEmpty())) {
    cloud_args.emplace_back(f);
  }
  ChildProcess cloud;
  RETURN_IF_ERROR(cloud.Start(cloud_args, work + "/cloud.log"));
  ASSIGN_OR_RETURN(const int cloud_port, cloud.WaitForPortFile(work + "/cloud.port", 60));
  std::fprintf(stderr,
               "[bench] cloud on port %d; %zu links x %zu policies x %zu questions; logs in %s\n",
               cloud_port, links.size(), policies.size(), examples.size(), work.c_str());
  std::vector<Result> results;
  for (const Link& link : links) {
    ASSIGN_OR_RETURN(std::vector<Result> per_policy,
                     RunLink(link, cloud_port, examples, policies, work));
    for (Result& r : per_policy) results.push_back(std::move(r));
    std::ofstream(absl::GetFlag(FLAGS_csv)) << Csv(results, slo, emulated);
  }
  ASSIGN_OR_RETURN(const int code, cloud.Stop(30));
  if (code != 0) return absl::InternalError(absl::StrCat("cloud exited with ", code));
  std::printf("%s", Csv(results, slo, emulated).c_str());
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "kvstream-e2e-bench: TTFT and quality against bandwidth through real daemons");
  absl::ParseCommandLine(argc, argv);
  const absl::Status st = Run();
  if (!st.ok()) {
    std::fprintf(stderr, "kvstream-e2e-bench: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
