// kvstream eval: quality against bandwidth, in process. Every example runs each variant
// (selector x retention x plan, per mode: kv with --model's own cache, projected and
// scout from --scout's, text) through the request pipeline the daemons run
// (common/pipeline: prefill with statistics -> select -> encode -> the serialized uplink
// messages -> the cloud's checks and rebuild -> generate), so what it measures is what
// the daemons do; wire bytes are every serialized uplink message, as the edge counts them.
// The senders' prefills are shared by an example's variants. Prints a table and writes
// CSV and JSON; the CSV is rewritten as examples complete, so a long sweep leaves partial
// results.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/base/status.h"
#include "common/codec/positions.h"
#include "common/eval/tasks.h"
#include "common/model/chat.h"
#include "common/model/generate.h"
#include "common/model/kv_chunks.h"
#include "common/model/model.h"
#include "common/model/projection.h"
#include "common/model/quality_probe.h"
#include "common/model/tokenizer.h"
#include "common/pipeline/pipeline.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(std::string, model, "testdata/models-2k/large", "Model directory that answers");
ABSL_FLAG(std::string, scout, "",
          "Scout model directory for scout mode (its selection, --model's prefill)");
ABSL_FLAG(std::string, tasks, "", "SQuAD-format JSON to evaluate; empty: generate --kind tasks");
ABSL_FLAG(
    std::string, modes, "kv",
    "Modes, comma separated: kv (--model's own cache), scout (needs --scout), projected (the "
    "scout's cache "
    "mapped into --model by --projection), text. profile: kv or projected (the scout's layers)");
ABSL_FLAG(std::string, specs, "raw",
          "Plans to evaluate, separated by ';' (e.g. \"raw;int8;int4,L0=f16\")");
ABSL_FLAG(std::string, selectors, "full",
          "Selectors, comma separated: full, q2c, q2c-question, snapkv, h2o, random");
ABSL_FLAG(std::string, retentions, "1", "Context retentions for the selectors, comma separated");
ABSL_FLAG(int, max_new_tokens, 8, "Answer length cap");
ABSL_FLAG(std::string, system, "Answer with the value from the context.", "System prompt");
ABSL_FLAG(std::string, csv, "", "Write per-variant results as CSV");
ABSL_FLAG(std::string, json, "", "Write per-variant results as JSON");
ABSL_FLAG(int, estimate_steps, 0,
          "eval: also run the edge's per-request quality estimate (this many steps) on every kv "
          "/ projected variant and report F1 split by whether it accepts the plan (every step's "
          "greedy token agrees with the full cache's), for calibrating it; 0: off");
ABSL_FLAG(std::string, low, "int2",
          "profile: the spec one layer at a time is quantized to (the rest lossless)");
ABSL_FLAG(std::string, base, "int4",
          "profile: the spec of the other layers when one layer is protected at f16");
ABSL_FLAG(double, protect_gain, 0.05,
          "profile: F1 gain over all --base that earns a layer f16 in the recommendation");
ABSL_FLAG(std::string, profile_json, "",
          "profile: write per-layer results and the recommended plan as JSON");
ABSL_FLAG(bool, answer_check, false,
          "eval: projected variants carry the answer check the edge sends by default "
          "(--answer_check there): the answering model answers from the prompt when its first "
          "token from the projected cache is not the scout's; off: the projection alone");
ABSL_FLAG(double, kv_min_confidence, 0,
          "eval: kv variants answer as the adaptive edge with --kv_min_confidence does: when the "
          "answering model's own probability of its first answer token is below this, the "
          "answer is --fallback_model's text answer (counted as answered from the prompt; the "
          "estimate's figures judge the kv answer itself; 0: off)");
ABSL_FLAG(std::string, fallback_model, "",
          "eval --kv_min_confidence: the model whose text answer replaces an unsure kv answer "
          "(empty: the large/ directory beside --model, as in testdata/models-2k)");
ABSL_FLAG(std::string, answers_csv, "",
          "eval: write every answer as CSV (variant, example id, question, the answer given, the "
          "gold answers joined by '|', exact match, F1), to see what a model says, not only how "
          "well");
ABSL_FLAG(std::string, estimate_csv, "",
          "eval --estimate_steps: write one row per answer (variant, example, the estimate's KL, "
          "agreement, p_top and the full cache's confidence, the answer's F1) as CSV, for "
          "calibrating the estimate");

namespace kvstream::cli {
namespace {

struct Variant {
  std::string mode;  // kv | scout | projected | text
  std::string selector;
  double retention;
  std::string spec;
  codec::Plan plan;  // parsed `spec` (kv mode)
  select::Policy policy = select::Policy::kFull;
  double em = 0, f1 = 0, f1_sq = 0, wire = 0, bytes16 = 0, kept = 0, context = 0;
  double cloud_seconds =
      0;  // the answering side's work before decoding: prefill, rebuild, projection
  int n = 0;
  int from_prompt = 0;  // --answer_check / --kv_min_confidence: answers from the prompt
  // --estimate_steps: examples the estimate accepted / rejected, their F1, and its KL.
  int est_accepted = 0, est_rejected = 0;
  double f1_accepted = 0, f1_rejected = 0, est_kl = 0;
  struct Answer {
    size_t example;
    model::QualityEstimate estimate;
    double f1;
  };
  std::vector<Answer> estimated = {};  // every answer the estimate saw, in order
  struct Given {
    size_t example;
    std::string text;
    double em, f1;
  };
  std::vector<Given> given = {};  // --answers_csv: every answer, in order
  std::string EstimateColumns() const {
    const int m = est_accepted + est_rejected;
    if (m == 0) return ",,,,";
    return absl::StrFormat(",%.4f,%.4f,%.4f,%.5f", static_cast<double>(est_accepted) / m,
                           est_accepted ? f1_accepted / est_accepted : 0.0,
                           est_rejected ? f1_rejected / est_rejected : 0.0, est_kl / m);
  }
  // Half-width of the normal-approximation 95% interval of the mean F1.
  double f1_ci95() const {
    if (n < 2) return 0;
    const double mean = f1 / n, var = std::max(0.0, (f1_sq - n * mean * mean) / (n - 1));
    return 1.96 * std::sqrt(var / n);
  }
};

// --estimate_steps: folds the edge's quality estimate of sending `kept` slots under
// `v.plan`, and the F1 the variant's answer got, into `v`.
absl::Status RecordEstimate(model::QualityProbe& probe, const std::vector<int32_t>& kept,
                            size_t example, double f1, Variant& v) {
  ASSIGN_OR_RETURN(const model::QualityEstimate e, probe.Estimate(kept, v.plan));
  v.estimated.push_back({example, e, f1});
  v.est_kl += e.kl;
  if (e.agreement >= 1.0) {
    ++v.est_accepted;
    v.f1_accepted += f1;
  } else {
    ++v.est_rejected;
    v.f1_rejected += f1;
  }
  return absl::OkStatus();
}

// --estimate_csv: one row per answer the estimate saw.
void WriteEstimateCsv(const std::vector<Variant>& vs) {
  const std::string path = absl::GetFlag(FLAGS_estimate_csv);
  if (path.empty() || absl::GetFlag(FLAGS_estimate_steps) <= 0) return;
  std::ofstream out(path);
  out << "mode,selector,retention,spec,example,steps,kl,agreement,p_top,confidence,f1\n";
  for (const Variant& v : vs) {
    for (const Variant::Answer& a : v.estimated) {
      out << absl::StrFormat("%s,%s,%.2f,\"%s\",%zu,%d,%.6g,%.4f,%.6g,%.6g,%.4f\n", v.mode,
                             v.selector, v.retention, v.spec, a.example, a.estimate.steps,
                             a.estimate.kl, a.estimate.agreement, a.estimate.p_top,
                             a.estimate.confidence, a.f1);
    }
  }
}

// A CSV field: quoted, quotes doubled.
std::string CsvField(const std::string& s) {
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "\"\""}}), "\"");
}

// --answers_csv: one row per answer given.
void WriteAnswersCsv(const std::vector<Variant>& vs, const std::vector<eval::Example>& examples) {
  const std::string path = absl::GetFlag(FLAGS_answers_csv);
  if (path.empty()) return;
  std::ofstream out(path);
  out << "mode,selector,retention,spec,example,question,answer,gold,em,f1\n";
  for (const Variant& v : vs) {
    for (const Variant::Given& g : v.given) {
      const eval::Example& ex = examples[g.example];
      out << absl::StrFormat("%s,%s,%.2f,%s,%s,%s,%s,%s,%.0f,%.4f\n", v.mode, v.selector,
                             v.retention, CsvField(v.spec), CsvField(ex.id), CsvField(ex.question),
                             CsvField(g.text), CsvField(absl::StrJoin(ex.answers, "|")), g.em,
                             g.f1);
    }
  }
}

// --estimate_steps: how often the edge's estimate accepts each kv / projected variant and
// the F1 of the answers it accepted and rejected (printed, and added to `rows`).
void PrintEstimates(const std::vector<Variant>& vs, nlohmann::json& rows) {
  if (absl::GetFlag(FLAGS_estimate_steps) <= 0) return;
  std::printf("\nquality estimate (%d steps; accepted: every step's greedy token agrees)\n",
              absl::GetFlag(FLAGS_estimate_steps));
  std::printf("%-9s %-12s %5s %-28s %9s %12s %12s %9s\n", "mode", "select", "keep", "spec",
              "accepted", "F1 accepted", "F1 rejected", "mean KL");
  for (size_t i = 0; i < vs.size(); ++i) {
    const Variant& v = vs[i];
    const int m = v.est_accepted + v.est_rejected;
    if (m == 0) continue;
    const double acc = v.est_accepted ? v.f1_accepted / v.est_accepted : 0.0;
    const double rej = v.est_rejected ? v.f1_rejected / v.est_rejected : 0.0;
    std::printf("%-9s %-12s %5.2f %-28s %9.3f %12s %12s %9.4f\n", v.mode.c_str(),
                v.selector.c_str(), v.retention, v.spec.c_str(),
                static_cast<double>(v.est_accepted) / m,
                v.est_accepted ? absl::StrFormat("%.3f (%d)", acc, v.est_accepted).c_str() : "-",
                v.est_rejected ? absl::StrFormat("%.3f (%d)", rej, v.est_rejected).c_str() : "-",
                v.est_kl / m);
    rows[i]["est_accepted"] = v.est_accepted;
    rows[i]["est_rejected"] = v.est_rejected;
    rows[i]["f1_when_accepted"] = acc;
    rows[i]["f1_when_rejected"] = rej;
    rows[i]["est_kl"] = v.est_kl / m;
  }
}

std::string Csv(const std::vector<Variant>& vs, double base_f1) {
  std::string out =
      "mode,selector,retention,spec,n,exact_match,f1,share_of_full_f1,wire_bytes,bandwidth_share,"
      "kept_context_tokens,"
      "context_tokens,cloud_ms,f1_ci95,est_accept_share,f1_when_accepted,f1_when_rejected,"
      "est_kl\n";
  for (const Variant& v : vs) {
    if (v.n == 0) continue;
    absl::StrAppendFormat(&out,
                          "%s,%s,%.2f,\"%s\",%d,%.4f,%.4f,%.4f,%.0f,%.5f,%.1f,%.1f,%.3f,%.4f%s\n",
                          v.mode, v.selector, v.retention, v.spec, v.n, v.em / v.n, v.f1 / v.n,
                          base_f1 > 0 ? (v.f1 / v.n) / base_f1 : 0.0, v.wire / v.n,
                          v.bytes16 > 0 ? v.wire / v.bytes16 : 0.0, v.kept / v.n, v.context / v.n,
                          1e3 * v.cloud_seconds / v.n, v.f1_ci95(), v.EstimateColumns());
  }
  return out;
}

// What one evaluation runs; RunEval fills it from the flags, RunProfile builds its own.
struct Sweep {
  std::string modes, specs, selectors, retentions;
  bool print = true;
};

// The variants a sweep names: text, then per selector and retention kv, scout and
// projected (one per plan).
absl::StatusOr<std::vector<Variant>> Variants(const std::set<std::string>& modes,
                                              const Sweep& sweep,
                                              const std::vector<codec::Plan>& plans) {
  const std::vector<std::string> specs = absl::StrSplit(sweep.specs, ';', absl::SkipEmpty());
  std::vector<select::Policy> selectors;
  for (absl::string_view s : absl::StrSplit(sweep.selectors, ',', absl::SkipEmpty())) {
    ASSIGN_OR_RETURN(select::Policy p, select::ParsePolicy(s));
    selectors.push_back(p);
  }
  std::vector<double> retentions;
  for (absl::string_view s : absl::StrSplit(sweep.retentions, ',', absl::SkipEmpty())) {
    double r;
    if (!absl::SimpleAtod(s, &r) || r < 0 || r > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--retentions: expected numbers in [0, 1], found '", s, "'"));
    }
    retentions.push_back(r);
  }
  std::vector<Variant> variants;
  if (modes.count("text"))
    variants.push_back({"text", "full", 1.0, "-", {}, select::Policy::kFull});
  for (select::Policy p : selectors) {
    const std::string name(select::PolicyName(p));
    for (double r : p == select::Policy::kFull ? std::vector<double>{1.0} : retentions) {
      for (size_t i = 0; modes.count("kv") && i < specs.size(); ++i) {
        variants.push_back({"kv", name, r, specs[i], plans[i], p});
      }
      if (modes.count("scout")) variants.push_back({"scout", name, r, "-", {}, p});
      for (size_t i = 0; modes.count("projected") && i < specs.size(); ++i) {
        variants.push_back({"projected", name, r, specs[i], plans[i], p});
      }
    }
  }
  if (variants.empty()) {
    return absl::InvalidArgumentError("nothing to evaluate: no mode/selector/spec given");
  }
  return variants;
}

absl::StatusOr<std::set<std::string>> Modes(const std::string& list) {
  std::set<std::string> modes;
  for (absl::string_view m : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    if (m != "kv" && m != "scout" && m != "projected" && m != "text") {
      return absl::InvalidArgumentError(
          absl::StrCat("--modes: expected kv, scout, projected or text; found '", m, "'"));
    }
    modes.emplace(m);
  }
  return modes;
}

absl::StatusOr<std::vector<eval::Example>> Examples(const model::Tokenizer& tok) {
  if (absl::GetFlag(FLAGS_tasks).empty()) return GeneratedTasks(tok);
  ASSIGN_OR_RETURN(std::vector<eval::Example> examples,
                   eval::LoadSquadFile(absl::GetFlag(FLAGS_tasks)));
  if (static_cast<int>(examples.size()) > absl::GetFlag(FLAGS_n)) {
    examples.resize(absl::GetFlag(FLAGS_n));
  }
  return examples;
}

// One example's senders: both prefills with statistics over the whole prompt, and the
// edge's quality probes on them.
struct Senders {
  model::PrefillResult own, scout;
  std::unique_ptr<model::QualityProbe> own_probe, scout_probe;
  // --kv_min_confidence, when --model is less sure of its first answer token (full cache):
  // --fallback_model's text answer
  std::optional<std::string> fallback_answer;
};

// --fallback_model, or the large/ directory beside --model.
std::string FallbackModel() {
  if (!absl::GetFlag(FLAGS_fallback_model).empty()) return absl::GetFlag(FLAGS_fallback_model);
  std::string model = absl::GetFlag(FLAGS_model);
  while (model.size() > 1 && model.back() == '/') model.pop_back();
  const size_t slash = model.rfind('/');
  return slash == std::string::npos ? "large" : model.substr(0, slash) + "/large";
}

// One sweep: the models, the examples, the variants, and the answering side as the
// cloud serves --model; Run evaluates every variant on every example.
class Evaluation {
 public:
  absl::Status Load(const Sweep& sweep) {
    using model::Model;
    model::SetComputeThreads(absl::GetFlag(FLAGS_threads));
    if (const double g = absl::GetFlag(FLAGS_kv_min_confidence); !(g >= 0 && g <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--kv_min_confidence: expected a probability in [0, 1], found ", g));
    }
    ASSIGN_OR_RETURN(answerer_, Model::Load(absl::GetFlag(FLAGS_model)));
    ASSIGN_OR_RETURN(tok_, model::Tokenizer::Load(absl::GetFlag(FLAGS_model) + "/tokenizer.json"));
    if (!absl::GetFlag(FLAGS_scout).empty()) {
      ASSIGN_OR_RETURN(scout_, Model::Load(absl::GetFlag(FLAGS_scout)));
    }
    ASSIGN_OR_RETURN(examples_, Examples(*tok_));
    if (const std::string csv = absl::GetFlag(FLAGS_answers_csv);
        !csv.empty() && !std::ofstream(csv)) {  // refused before the sweep, not after it
      return absl::InvalidArgumentError(absl::StrCat("--answers_csv: cannot write ", csv));
    }
    std::vector<codec::Plan> plans;
    for (absl::string_view s : absl::StrSplit(sweep.specs, ';', absl::SkipEmpty())) {
      ASSIGN_OR_RETURN(codec::Plan p, codec::ParsePlan(s));
      RETURN_IF_ERROR(p.Validate(answerer_->config().num_layers));
      plans.push_back(p);
    }
    ASSIGN_OR_RETURN(const std::set<std::string> modes, Modes(sweep.modes));
    if ((modes.count("scout") || modes.count("projected")) && scout_ == nullptr) {
      return absl::InvalidArgumentError(
          "--modes=scout and projected need --scout=DIR (the model that selects)");
    }
    if (modes.count("projected")) RETURN_IF_ERROR(LoadProjection(plans));
    ASSIGN_OR_RETURN(variants_, Variants(modes, sweep, plans));
    receiver_.model = answerer_.get();
    receiver_.name = "eval";
    const int sampling_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    receiver_.limits = {static_cast<uint32_t>(std::max(512, sampling_tokens)),
                        static_cast<uint32_t>(sampling_tokens)};
    receiver_.stop_tokens = pipeline::StopTokens(*answerer_, tok_.get());
    if (absl::GetFlag(FLAGS_kv_min_confidence) > 0 && modes.count("kv")) {
      ASSIGN_OR_RETURN(fallback_, Model::Load(FallbackModel()));
      fallback_receiver_ = receiver_;
      fallback_receiver_.model = fallback_.get();
      fallback_receiver_.stop_tokens = pipeline::StopTokens(*fallback_, tok_.get());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<Variant>> Run(bool print) {
    const auto start = std::chrono::steady_clock::now();
    double base_f1 = 0;
    for (size_t e = 0; e < examples_.size(); ++e) {
      const eval::Example& ex = examples_[e];
      ASSIGN_OR_RETURN(
          const model::ChatPrompt prompt,
          model::BuildQaPrompt(*tok_, ex.context, ex.question, {absl::GetFlag(FLAGS_system)}));
      lengths_.insert(static_cast<int>(prompt.tokens.size()));
      ASSIGN_OR_RETURN(Senders senders, Prefill(prompt));
      RETURN_IF_ERROR(Fallback(prompt, senders));
      for (Variant& v : variants_) RETURN_IF_ERROR(Answer(ex, e, prompt, senders, v));
      base_f1 = variants_[0].f1 / variants_[0].n;
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fprintf(stderr, "\r[eval] %zu/%zu examples, %.0f s, first variant F1 %.3f   ", e + 1,
                   examples_.size(), secs, base_f1);
      if (!absl::GetFlag(FLAGS_csv).empty() && ((e + 1) % 10 == 0 || e + 1 == examples_.size())) {
        std::ofstream(absl::GetFlag(FLAGS_csv)) << Csv(variants_, base_f1);
      }
    }
    std::fprintf(stderr, "\n");
    if (print) Print(base_f1);
    return variants_;
  }

 private:
  // --kv_min_confidence: the text answer an unsure kv answer is replaced with.
  absl::Status Fallback(const model::ChatPrompt& prompt, Senders& s) const {
    if (fallback_ == nullptr ||
        model::GreedyProbability(s.own.last_logits) >= absl::GetFlag(FLAGS_kv_min_confidence)) {
      return absl::OkStatus();
    }
    pipeline::Request text;
    text.mode = kvstream::v1::MODE_TEXT;
    text.cloud_model = "eval";
    text.max_tokens = receiver_.limits.default_new_tokens;
    ASSIGN_OR_RETURN(
        const pipeline::Payload payload,
        pipeline::Encode(*fallback_, nullptr, nullptr, prompt, text, pipeline::NewSessionId()));
    ASSIGN_OR_RETURN(const pipeline::LocalAnswer a,
                     pipeline::AnswerLocally(payload, fallback_receiver_));
    ASSIGN_OR_RETURN(s.fallback_answer, tok_->Decode(a.tokens, true));
    return absl::OkStatus();
  }

  absl::Status LoadProjection(const std::vector<codec::Plan>& plans) {
    if (absl::GetFlag(FLAGS_projection).empty()) {
      return absl::InvalidArgumentError(
          "--modes=projected needs --projection=FILE (kvstream fit-projection)");
    }
    ASSIGN_OR_RETURN(projection_, model::Projection::Load(absl::GetFlag(FLAGS_projection)));
    RETURN_IF_ERROR(projection_->CheckTarget(*answerer_));
    const model::ModelConfig& sc = scout_->config();
    RETURN_IF_ERROR(projection_->CheckSource(scout_->fingerprint(), sc.num_layers, sc.num_kv_heads,
                                             sc.head_dim));
    for (const codec::Plan& p : plans) RETURN_IF_ERROR(p.Validate(sc.num_layers));
    return absl::OkStatus();
  }

  // The senders' prefills, with statistics over the whole prompt (the request names a
  // selector only so that Prefill gathers them), shared by every variant: their caches
  // equal the plain prefill's that a request without a selector gets (pipeline_test).
  // The edge's estimate probes the cache that is sent: --model's own (kv), the scout's
  // (projected).
  absl::StatusOr<Senders> Prefill(const model::ChatPrompt& prompt) const {
    pipeline::Request stats_request;
    stats_request.selector = select::Policy::kQ2C;
    Senders s;
    ASSIGN_OR_RETURN(s.own, pipeline::Prefill(*answerer_, prompt, stats_request));
    if (scout_ != nullptr) {
      ASSIGN_OR_RETURN(s.scout, pipeline::Prefill(*scout_, prompt, stats_request));
    }
    const int steps = absl::GetFlag(FLAGS_estimate_steps);
    if (steps <= 0) return s;
    const int32_t last = prompt.tokens.back();
    const std::vector<int32_t>& stop = receiver_.stop_tokens;
    ASSIGN_OR_RETURN(s.own_probe, model::QualityProbe::Create(*answerer_, *s.own.cache, last, steps,
                                                              stop, &s.own.last_logits));
    if (scout_ != nullptr) {
      ASSIGN_OR_RETURN(s.scout_probe,
                       model::QualityProbe::Create(*scout_, *s.scout.cache, last, steps, stop,
                                                   &s.scout.last_logits));
    }
    return s;
  }

  // One variant on one example: the request as the edge would send it, carried to the
  // answering side in process through the daemons' own messages and checks.
  absl::Status Answer(const eval::Example& ex, size_t e, const model::ChatPrompt& prompt,
                      const Senders& senders, Variant& v) {
    ASSIGN_OR_RETURN(const pipeline::Mode mode, pipeline::ParseMode(v.mode, false));
    pipeline::Request req;
    req.mode = mode;
    req.selector = v.policy;
    req.retention = v.retention;
    req.seed = e;
    req.plan = v.plan;
    req.cloud_model = receiver_.name;
    req.max_tokens = receiver_.limits.default_new_tokens;  // --max_new_tokens
    req.layer_chunks = req.CanStreamLayers();              // the chunks the edge sends by default
    req.answer_check = absl::GetFlag(FLAGS_answer_check);
    const bool own = mode == kvstream::v1::MODE_KV;
    const model::Model& sender = own || scout_ == nullptr ? *answerer_ : *scout_;
    const model::PrefillResult& pre = own ? senders.own : senders.scout;
    select::Selection sel;
    if (mode != kvstream::v1::MODE_TEXT) {
      ASSIGN_OR_RETURN(sel, pipeline::Select(pre, prompt, req));
    } else {
      sel.context_kept = sel.context_total = prompt.spans.context_tokens();
    }
    const bool prefilled = pipeline::SenderPrefills(req);
    ASSIGN_OR_RETURN(const pipeline::Payload payload,
                     pipeline::Encode(sender, prefilled ? &pre : nullptr, &sel, prompt, req,
                                      pipeline::NewSessionId()));
    pipeline::Receiver to = receiver_;
    to.projection = mode == kvstream::v1::MODE_PROJECTED ? projection_.get() : nullptr;
    ASSIGN_OR_RETURN(const pipeline::LocalAnswer a, pipeline::AnswerLocally(payload, to));
    ASSIGN_OR_RETURN(std::string answer, tok_->Decode(a.tokens, true));
    const double own_f1 = eval::TokenF1(answer, ex.answers);  // what the estimate judged
    if (v.mode == "kv" && senders.fallback_answer) {          // the scout was unsure: text answers
      answer = *senders.fallback_answer;
      ++v.from_prompt;
    }
    const double f1 = eval::TokenF1(answer, ex.answers);
    model::QualityProbe* probe = v.mode == "kv"          ? senders.own_probe.get()
                                 : v.mode == "projected" ? senders.scout_probe.get()
                                                         : nullptr;
    if (probe != nullptr) RETURN_IF_ERROR(RecordEstimate(*probe, sel.kept, e, own_f1, v));
    const model::ModelConfig& c = answerer_->config();
    v.cloud_seconds += a.times.prefill + a.times.rebuild + a.times.projection;
    v.from_prompt += a.check.answered_from_prompt;
    const double em = eval::ExactMatch(answer, ex.answers);
    if (!absl::GetFlag(FLAGS_answers_csv).empty()) v.given.push_back({e, answer, em, f1});
    v.em += em;
    v.f1 += f1;
    v.f1_sq += f1 * f1;
    v.wire += static_cast<double>(a.wire_bytes);
    v.bytes16 += 2.0 * 2 * c.num_layers * c.num_kv_heads * (prompt.tokens.size() - 1) * c.head_dim;
    v.kept += sel.context_kept;
    v.context += sel.context_total;
    ++v.n;
    return absl::OkStatus();
  }

  // The scout every variant was measured with, as quality tables name it: kv sends
  // --model's own cache, the other modes --scout's; empty when the variants differ (such
  // a run's rows cannot be one table's) or no variant sends a scout's work.
  std::string Sender() const {
    std::string sender;
    for (const Variant& v : variants_) {
      const model::Model* m = v.mode == "kv" ? answerer_.get() : scout_.get();
      if (m == nullptr) continue;
      if (!sender.empty() && sender != m->fingerprint()) return "";
      sender = m->fingerprint();
    }
    return sender;
  }

  void Print(double base_f1) const {
    std::printf(
        "model %s (%s), %zu examples (%s; prompt tokens %d-%d, %zu distinct lengths); share of F1 "
        "relative to the first row; +-: 95%% interval of the mean F1\n",
        absl::GetFlag(FLAGS_model).c_str(), answerer_->fingerprint().c_str(), examples_.size(),
        absl::GetFlag(FLAGS_tasks).empty() ? TaskShape().c_str()
                                           : absl::GetFlag(FLAGS_tasks).c_str(),
        lengths_.empty() ? 0 : *lengths_.begin(), lengths_.empty() ? 0 : *lengths_.rbegin(),
        lengths_.size());
    std::printf("%-9s %-12s %5s %-28s %6s %6s %6s %8s %10s %8s\n", "mode", "select", "keep", "spec",
                "EM", "F1", "+-", "F1 share", "bandwidth", "cloud ms");
    nlohmann::json rows = nlohmann::json::array();
    const std::string sender = Sender();
    for (const Variant& v : variants_) {
      const double f1 = v.f1 / v.n;
      std::printf("%-9s %-12s %5.2f %-28s %6.3f %6.3f %6.3f %8.3f %10.4f %8.2f\n", v.mode.c_str(),
                  v.selector.c_str(), v.retention, v.spec.c_str(), v.em / v.n, f1, v.f1_ci95(),
                  base_f1 > 0 ? f1 / base_f1 : 0.0, v.wire / v.bytes16,
                  1e3 * v.cloud_seconds / v.n);
      rows.push_back({{"mode", v.mode},
                      {"selector", v.selector},
                      {"retention", v.retention},
                      {"spec", v.spec},
                      {"n", v.n},
                      {"exact_match", v.em / v.n},
                      {"f1", f1},
                      {"f1_ci95", v.f1_ci95()},
                      {"bandwidth_share", v.wire / v.bytes16},
                      {"context_tokens", v.context / v.n},
                      {"cloud_ms", 1e3 * v.cloud_seconds / v.n},
                      {"answered_from_prompt", static_cast<double>(v.from_prompt) / v.n}});
      if (!lengths_.empty()) {  // the prompt lengths measured over, as quality tables state them
        rows.back()["tokens"] = {*lengths_.begin(), *lengths_.rbegin()};
      }
      if (v.mode == "kv") {  // the gate its answers went through (0: none)
        rows.back()["kv_min_confidence"] = absl::GetFlag(FLAGS_kv_min_confidence);
      }
      if (!sender.empty()) rows.back()["scout"] = sender;
      if (v.from_prompt > 0) {
        std::printf("%9s answer check: %d of %d answered from the prompt\n", "", v.from_prompt,
                    v.n);
      }
    }
    PrintEstimates(variants_, rows);
    WriteEstimateCsv(variants_);
    WriteAnswersCsv(variants_, examples_);
    if (!absl::GetFlag(FLAGS_json).empty()) {
      std::ofstream(absl::GetFlag(FLAGS_json)) << rows.dump(1) << "\n";
    }
  }

  std::unique_ptr<model::Model> answerer_, scout_, fallback_;
  pipeline::Receiver fallback_receiver_;  // --kv_min_confidence: fallback_ answering text
  std::unique_ptr<model::Tokenizer> tok_;
  std::unique_ptr<model::Projection> projection_;
  std::vector<eval::Example> examples_;
  std::vector<Variant> variants_;
  pipeline::Receiver receiver_;
  std::set<int> lengths_;  // distinct prompt lengths the cell sampled
};

absl::StatusOr<std::vector<Variant>> Run(const Sweep& sweep) {
  Evaluation evaluation;
  RETURN_IF_ERROR(evaluation.Load(sweep));
  return evaluation.Run(sweep.print);
}

// The per-layer diagnostic: quantize one layer at a time to --low (the rest lossless),
// and protect one layer at a time at f16 (the rest at --base); recommend a plan.
absl::Status Profile() {
  // kv: --model's own cache; projected: the scout's cache (its layers are the ones sent)
  // as --model answers from it through --projection.
  const std::string mode = absl::GetFlag(FLAGS_modes);
  if (mode != "kv" && mode != "projected") {
    return absl::InvalidArgumentError(
        absl::StrCat("profile: --modes must be kv or projected, found '", mode, "'"));
  }
  const std::string sent = mode == "kv" ? absl::GetFlag(FLAGS_model) : absl::GetFlag(FLAGS_scout);
  if (sent.empty())
    return absl::InvalidArgumentError("profile --modes=projected needs --scout and --projection");
  ASSIGN_OR_RETURN(model::ModelConfig c, model::ModelConfig::Load(sent + "/config.json"));
  const std::string low = absl::GetFlag(FLAGS_low), base = absl::GetFlag(FLAGS_base);
  for (const std::string& s : {low, base}) {
    ASSIGN_OR_RETURN(codec::Plan p, codec::ParsePlan(s));
    if (!p.overrides.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("--low/--base: expected one spec, found '", s, "'"));
  }
  Sweep sweep;
  sweep.modes = mode;
  sweep.selectors = "full";
  sweep.retentions = "1";
  sweep.print = false;
  sweep.specs = absl::StrCat("raw;", low, ";", base);
  for (int l = 0; l < c.num_layers; ++l) absl::StrAppend(&sweep.specs, ";raw,L", l, "=", low);
  for (int l = 0; l < c.num_layers; ++l) absl::StrAppend(&sweep.specs, ";", base, ",L", l, "=f16");
  ASSIGN_OR_RETURN(std::vector<Variant> v, Run(sweep));
  auto f1 = [&](size_t i) { return v[i].n ? v[i].f1 / v[i].n : 0.0; };
  const double raw = f1(0), all_low = f1(1), all_base = f1(2);
  std::printf(
      "%s cache of %s: %d layers, %d examples; F1 lossless %.3f, all %s %.3f, all %s %.3f\n",
      mode.c_str(), sent.c_str(), c.num_layers, v[0].n, raw, low.c_str(), all_low, base.c_str(),
      all_base);
  std::printf("%5s %22s %22s\n", "layer", absl::StrCat("only it ", low).c_str(),
              absl::StrCat("it f16, rest ", base).c_str());
  nlohmann::json layers = nlohmann::json::array();
  std::vector<std::pair<double, int>> gains;
  for (int l = 0; l < c.num_layers; ++l) {
    const double alone = f1(3 + l), protect = f1(3 + c.num_layers + l);
    std::printf("%5d %15.3f (%+.3f) %15.3f (%+.3f)\n", l, alone, alone - raw, protect,
                protect - all_base);
    layers.push_back({{"layer", l}, {"quantized_alone_f1", alone}, {"protected_f1", protect}});
    gains.emplace_back(protect - all_base, l);
  }
  // Protect the layers whose f16 copy gains at least --protect_gain over all-base, the
  // largest gains first, at most two; none when all-base is already within 2% of lossless.
  std::sort(gains.rbegin(), gains.rend());
  std::string plan = base;
  int protected_layers = 0;
  for (const auto& [gain, l] : gains) {
    if (protected_layers == 2 || gain < absl::GetFlag(FLAGS_protect_gain) || all_base >= 0.98 * raw)
      break;
    absl::StrAppend(&plan, ",L", l, "=f16");
    ++protected_layers;
  }
  std::printf("recommended plan: %s\n", plan.c_str());
  if (!absl::GetFlag(FLAGS_profile_json).empty()) {
    nlohmann::json out = {{"model", absl::GetFlag(FLAGS_model)},
                          {"mode", mode},
                          {"sent", sent},
                          {"n", v[0].n},
                          {"low", low},
                          {"base", base},
                          {"lossless_f1", raw},
                          {"all_low_f1", all_low},
                          {"all_base_f1", all_base},
                          {"layers", layers},
                          {"recommended_plan", plan}};
    std::ofstream(absl::GetFlag(FLAGS_profile_json)) << out.dump(1) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

int RunEval() {
  Sweep sweep{absl::GetFlag(FLAGS_modes), absl::GetFlag(FLAGS_specs),
              absl::GetFlag(FLAGS_selectors), absl::GetFlag(FLAGS_retentions), true};
  return ExitCode("eval", Run(sweep).status());
}

int RunProfile() { return ExitCode("profile", Profile()); }

}  // namespace kvstream::cli
