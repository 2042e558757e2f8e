// kvstream fit-projection: fits the per-layer linear maps that carry a source model's
// KV cache (the edge's scout) into a target model's (the cloud's large model), over
// calibration prompts built the way the edge builds requests (ChatML QA prompts over
// generated tasks, plus optional plain text), and writes the projection file the cloud
// serves with --projection. Prints held-out R^2 and linear CKA per layer for K and V.
// kvstream compare-models reports the research's cross-model figures for a model pair:
// per-layer K/V CKA on clean caches and the overlap of the two models' selections.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/status.h"
#include "common/model/chat.h"
#include "common/model/model.h"
#include "common/model/projection.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(std::string, from, "testdata/models-2k/scout",
          "fit-projection: source model directory (the edge's scout)");
ABSL_FLAG(std::string, to, "testdata/models-2k/large",
          "fit-projection: target model directory (answers in the cloud)");
ABSL_FLAG(std::string, layer_map, "bracket",
          "fit-projection: source layers per target layer: bracket (the one or two at the same "
          "relative depth) "
          "or all");
ABSL_FLAG(bool, joint_inputs, false,
          "fit-projection: both maps read the source layers' keys and values (twice the inputs)");
ABSL_FLAG(std::string, fit_specs, "raw;int4",
          "fit-projection: plans the scout's cache goes through before fitting, one per prompt in "
          "turn, separated "
          "by ';' (e.g. \"raw;int8;int4\"): maps fitted on what the cloud receives do not amplify "
          "its noise");
ABSL_FLAG(std::string, calibration,
          "single:8,single:40,single:72,needle:256,needle:512,needle:1024,multi_lives:20",
          "fit-projection: calibration prompt sets, KIND:SIZE comma separated (single, multi, "
          "multi_lives: records; needle: tokens)");
ABSL_FLAG(int, calibration_n, 16, "fit-projection: prompts per calibration set");
ABSL_FLAG(
    std::string, calibration_text, "",
    "fit-projection: plain-text file whose 512-token windows are added as contexts (empty: none)");
ABSL_FLAG(int, held_out_every, 4,
          "fit-projection: every Nth prompt is held out (ridge choice and reported fit)");

namespace kvstream::cli {
namespace {

struct CalibrationSet {
  std::string kind;
  int size = 0;
};

absl::StatusOr<std::vector<CalibrationSet>> ParseCalibration(const std::string& text) {
  std::vector<CalibrationSet> sets;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const std::vector<std::string> parts = absl::StrSplit(item, ':');
    CalibrationSet s;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &s.size) || s.size < 1 ||
        !eval::IsGeneratedKind(parts[0])) {
      return absl::InvalidArgumentError(absl::StrCat("--calibration: expected KIND:SIZE with KIND ",
                                                     eval::kGeneratedKinds, ", found '", item,
                                                     "'"));
    }
    s.kind = parts[0];
    sets.push_back(s);
  }
  if (sets.empty()) return absl::InvalidArgumentError("--calibration is empty");
  return sets;
}

// The calibration prompts' token ids (without the last token, as the cache holds).
absl::StatusOr<std::vector<std::vector<int32_t>>> CalibrationPrompts(const model::Tokenizer& tok) {
  ASSIGN_OR_RETURN(const std::vector<CalibrationSet> sets,
                   ParseCalibration(absl::GetFlag(FLAGS_calibration)));
  ASSIGN_OR_RETURN(auto words, eval::LoadWords(absl::GetFlag(FLAGS_words)));
  eval::TaskGenerator gen(words, [&tok](const std::string& t) {
    return static_cast<int>(tok.Encode(t, false)->size());
  });
  gen.set_single_token_names(absl::GetFlag(FLAGS_single_token_names));
  model::ChatOptions chat{"Answer with the value from the context."};
  std::vector<std::vector<int32_t>> prompts;
  auto add = [&](const std::string& context, const std::string& question) -> absl::Status {
    ASSIGN_OR_RETURN(model::ChatPrompt p, model::BuildQaPrompt(tok, context, question, chat));
    p.tokens.pop_back();
    prompts.push_back(std::move(p.tokens));
    return absl::OkStatus();
  };
  uint64_t seed = 90001;  // apart from evaluation (task_seed) and training seeds
  for (const CalibrationSet& s : sets) {
    eval::TaskOptions o;
    o.kind = s.kind;
    o.num_examples = absl::GetFlag(FLAGS_calibration_n);
    o.num_records = s.size;
    o.target_tokens = s.size;
    o.seed = seed++;
    for (const eval::Example& ex : gen.Generate(o)) RETURN_IF_ERROR(add(ex.context, ex.question));
  }
  if (!absl::GetFlag(FLAGS_calibration_text).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_calibration_text));
    if (!in)
      return absl::NotFoundError(
          absl::StrCat("--calibration_text: cannot read ", absl::GetFlag(FLAGS_calibration_text)));
    std::stringstream ss;
    ss << in.rdbuf();
    ASSIGN_OR_RETURN(const std::vector<int32_t> ids, tok.Encode(ss.str(), false));
    for (size_t b = 0; b + 64 <= ids.size(); b += 512) {
      const std::vector<int32_t> window(ids.begin() + b,
                                        ids.begin() + std::min(ids.size(), b + 512));
      ASSIGN_OR_RETURN(const std::string context, tok.Decode(window));
      RETURN_IF_ERROR(add(context, "What is this text about?"));
    }
  }
  return prompts;
}

// The --from and --to models, their shared tokenizer, and the maps fitted between them
// over the calibration prompts under `options`.
struct Fitted {
  std::unique_ptr<model::Model> source, target;
  std::unique_ptr<model::Tokenizer> tokenizer;
  std::unique_ptr<model::Projection> projection;
};

absl::StatusOr<Fitted> LoadAndFit(const model::FitOptions& options) {
  if (absl::GetFlag(FLAGS_held_out_every) < 2) {
    return absl::InvalidArgumentError("--held_out_every must be >= 2");
  }
  const std::string from = absl::GetFlag(FLAGS_from), to = absl::GetFlag(FLAGS_to);
  RETURN_IF_ERROR(model::CheckSameTokenizer(from, to));
  model::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  Fitted f;
  ASSIGN_OR_RETURN(f.source, model::Model::Load(from));
  ASSIGN_OR_RETURN(f.target, model::Model::Load(to));
  ASSIGN_OR_RETURN(f.tokenizer, model::Tokenizer::Load(from + "/tokenizer.json"));
  ASSIGN_OR_RETURN(const auto prompts, CalibrationPrompts(*f.tokenizer));
  ASSIGN_OR_RETURN(auto fitter, model::ProjectionFitter::Create(*f.source, *f.target, options));
  for (size_t i = 0; i < prompts.size(); ++i) {
    RETURN_IF_ERROR(
        fitter->AddPrompt(prompts[i], (i + 1) % absl::GetFlag(FLAGS_held_out_every) == 0));
  }
  ASSIGN_OR_RETURN(f.projection, fitter->Fit());
  return f;
}

absl::Status FitProjection() {
  if (absl::GetFlag(FLAGS_projection).empty()) {
    return absl::InvalidArgumentError("--projection is required (the file to write)");
  }
  model::FitOptions fo;
  fo.layer_map = absl::GetFlag(FLAGS_layer_map);
  fo.joint_inputs = absl::GetFlag(FLAGS_joint_inputs);
  fo.input_specs = absl::StrSplit(absl::GetFlag(FLAGS_fit_specs), ';', absl::SkipEmpty());
  fo.calibration =
      absl::StrCat(absl::GetFlag(FLAGS_calibration), " x ", absl::GetFlag(FLAGS_calibration_n),
                   "; scout cache through ", absl::GetFlag(FLAGS_fit_specs),
                   absl::GetFlag(FLAGS_calibration_text).empty() ? "" : " + plain text windows",
                   ", every ", absl::GetFlag(FLAGS_held_out_every), "th held out");
  ASSIGN_OR_RETURN(const Fitted fitted, LoadAndFit(fo));
  const model::Projection* projection = fitted.projection.get();
  const model::ProjectionHeader& h = projection->header();
  std::printf("%s -> %s: %d prompts (%d held out), %lld positions, layer map %s%s\n",
              h.source.fingerprint.c_str(), h.target.fingerprint.c_str(),
              h.calibration_prompts + h.held_out_prompts, h.held_out_prompts,
              static_cast<long long>(h.calibration_positions), fo.layer_map.c_str(),
              fo.joint_inputs ? ", joint K+V inputs" : "");
  std::printf("%-6s %-10s %8s %8s %8s %8s %10s %10s\n", "layer", "sources", "R2(K)", "R2(V)",
              "CKA(K)", "CKA(V)", "ridge K", "ridge V");
  for (size_t t = 0; t < h.layers.size(); ++t) {
    const model::ProjectionLayer& l = h.layers[t];
    std::printf("%-6zu %-10s %8.4f %8.4f %8.4f %8.4f %10.2e %10.2e\n", t,
                absl::StrJoin(l.source_layers, "+").c_str(), l.r2_k, l.r2_v, l.cka_k, l.cka_v,
                l.ridge_k, l.ridge_v);
  }
  RETURN_IF_ERROR(projection->Save(absl::GetFlag(FLAGS_projection)));
  std::printf("wrote %s\n", absl::GetFlag(FLAGS_projection).c_str());
  return absl::OkStatus();
}

// Share of the scout's kept context positions that the large model's own selection also
// keeps, per selector and retention, over the --kind/--n generated questions.
absl::Status SelectionOverlap(model::Model& source, model::Model& target,
                              const model::Tokenizer& tok) {
  ASSIGN_OR_RETURN(const std::vector<eval::Example> examples, GeneratedTasks(tok));
  const std::vector<std::pair<select::Policy, double>> cells = {{select::Policy::kQ2C, 0.5},
                                                                {select::Policy::kQ2C, 0.75},
                                                                {select::Policy::kSnapKV, 0.5},
                                                                {select::Policy::kSnapKV, 0.75}};
  std::vector<double> overlap(cells.size(), 0);
  for (const eval::Example& ex : examples) {
    ASSIGN_OR_RETURN(model::ChatPrompt p,
                     model::BuildQaPrompt(tok, ex.context, ex.question,
                                          {"Answer with the value from the context."}));
    p.spans.num_tokens = static_cast<int>(p.tokens.size()) - 1;  // selection over the cache
    ASSIGN_OR_RETURN(model::PrefillResult a, model::PrefillForSelection(source, p.tokens, p.spans));
    ASSIGN_OR_RETURN(model::PrefillResult b, model::PrefillForSelection(target, p.tokens, p.spans));
    for (size_t c = 0; c < cells.size(); ++c) {
      select::SelectOptions so;
      so.policy = cells[c].first;
      so.retention = cells[c].second;
      ASSIGN_OR_RETURN(select::Selection sa, select::Select(a.stats, p.spans, so));
      ASSIGN_OR_RETURN(select::Selection sb, select::Select(b.stats, p.spans, so));
      std::vector<int32_t> both;
      std::set_intersection(sa.kept.begin(), sa.kept.end(), sb.kept.begin(), sb.kept.end(),
                            std::back_inserter(both));
      // Only context positions are chosen; the rest (template, question) are always kept.
      const int always = static_cast<int>(sa.kept.size()) - sa.context_kept;
      overlap[c] +=
          sa.context_kept > 0
              ? static_cast<double>(static_cast<int>(both.size()) - always) / sa.context_kept
              : 1.0;
    }
  }
  const double research[] = {0.863, 0.915, 0.895, 0.949};  // Qwen2.5-3B vs 7B
  std::printf(
      "\nselection overlap (share of the source's kept context also kept by the target), %zu %s "
      "questions\n",
      examples.size(), absl::GetFlag(FLAGS_kind).c_str());
  std::printf("%-8s %9s %10s %22s\n", "selector", "retention", "overlap", "research (3B vs 7B)");
  for (size_t c = 0; c < cells.size(); ++c) {
    std::printf("%-8s %9.2f %10.3f %22.3f\n",
                std::string(select::PolicyName(cells[c].first)).c_str(), cells[c].second,
                overlap[c] / examples.size(), research[c]);
  }
  return absl::OkStatus();
}

// The research's cross-model figures on any model pair: per target layer, linear CKA
// between the source's keys (before RoPE) and values and the target's, on clean caches
// (held-out prompts of the calibration set), and the selection overlap.
absl::Status CompareModels() {
  model::FitOptions fo;
  fo.layer_map = absl::GetFlag(FLAGS_layer_map);
  ASSIGN_OR_RETURN(const Fitted fitted, LoadAndFit(fo));
  const std::string from = absl::GetFlag(FLAGS_from), to = absl::GetFlag(FLAGS_to);
  const model::Projection* projection = fitted.projection.get();
  const model::ProjectionHeader& h = projection->header();
  std::printf("%s -> %s, %d held-out prompts (%s layer map; clean caches)\n", from.c_str(),
              to.c_str(), h.held_out_prompts, fo.layer_map.c_str());
  std::printf("%-6s %-8s %8s %8s %8s %8s\n", "layer", "sources", "CKA(K)", "CKA(V)", "R2(K)",
              "R2(V)");
  double ck = 0, cv = 0;
  for (size_t t = 0; t < h.layers.size(); ++t) {
    const model::ProjectionLayer& l = h.layers[t];
    std::printf("%-6zu %-8s %8.4f %8.4f %8.4f %8.4f\n", t,
                absl::StrJoin(l.source_layers, "+").c_str(), l.cka_k, l.cka_v, l.r2_k, l.r2_v);
    ck += l.cka_k / h.layers.size();
    cv += l.cka_v / h.layers.size();
  }
  std::printf("mean   %-8s %8.4f %8.4f   (research, Qwen2.5-3B vs 7B: K 0.975, V 0.71)\n", "", ck,
              cv);
  return SelectionOverlap(*fitted.source, *fitted.target, *fitted.tokenizer);
}

}  // namespace

int RunFitProjection() { return ExitCode("fit-projection", FitProjection()); }
int RunCompareModels() { return ExitCode("compare-models", CompareModels()); }

}  // namespace kvstream::cli
