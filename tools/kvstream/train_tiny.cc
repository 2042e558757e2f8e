// kvstream train-tiny: trains the project's tiny Qwen2-architecture models and their
// byte-level BPE tokenizer on the synthetic retrieval tasks (common/eval), and writes
// them as Hugging Face directories (config.json, model.safetensors, tokenizer.json).
//
// Recipe (retrieval is learned suddenly, after a plateau, when induction heads form):
// HF initialisation (std 0.02), AdamW with warmup and cosine decay, a curriculum gated
// on held-out exact match (contexts of 2 to --start_records records at first, growing
// only once recall works at the current length), several questions per training
// sequence (multi-query associative recall) and a closing recap of records whose values
// are targets too (--recap), loss on answer tokens only, record names and values that
// the tokenizer keeps whole (--word_pool), RoPE base 1e6 (--rope_theta), and a recall
// circuit planted in layers 0-1 and held fixed for the first steps (--recall_circuit,
// --freeze_circuit), without which the key matching had not formed in 17,000 steps;
// for probes, previous-token heads alone (--offset_heads). The large model can start
// as the trained scout grown (--grow_from), and a trained model can be carried on to
// longer contexts (--continue_from). Checkpoints every --checkpoint_every steps;
// an interrupted run resumes from them.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/status.h"
#include "common/eval/tasks.h"
#include "common/model/bpe_trainer.h"
#include "common/model/chat.h"
#include "common/model/model.h"
#include "common/model/tokenizer.h"
#include "common/model/training.h"
#include "common/model/transformer.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(std::string, train, "both", "What to train: tokenizer, scout, large or both");
ABSL_FLAG(std::string, ckpt_dir, "build/train-ckpt",
          "Checkpoint directory (resumed from when present)");
ABSL_FLAG(int, steps, 60000, "Optimizer steps per model (the learning-rate schedule spans them)");
ABSL_FLAG(int, stop_after, 0,
          "Stop after this step and export it whatever it scores, the schedule still spanning "
          "--steps (0: run all --steps); reproduces a checkpoint taken part-way through a run");
ABSL_FLAG(int, batch, 32, "Sequences per step");
ABSL_FLAG(int, micro_batch, 8,
          "Sequences per forward/backward pass (gradients are summed over --batch)");
ABSL_FLAG(double, lr, 2e-3, "Peak learning rate");
ABSL_FLAG(int, warmup, 300, "Linear warm-up steps");
ABSL_FLAG(uint64_t, train_seed, 1, "Seed for initialisation and data");
ABSL_FLAG(int, checkpoint_every, 200, "Steps between checkpoints");
ABSL_FLAG(int, eval_every, 500, "Steps between held-out evaluations (and exports)");
ABSL_FLAG(int, eval_questions, 40, "Held-out questions per evaluation");
ABSL_FLAG(double, max_minutes, 0,
          "Stop after this many minutes, checkpoint and export (0: no limit)");
ABSL_FLAG(int, max_records, 64,
          "Records in the longest single-hop training contexts (~500 tokens)");
ABSL_FLAG(int, start_records, 8,
          "Curriculum: records per context at the start (contexts hold 2 to this many)");
ABSL_FLAG(double, advance_em, 0.8,
          "Curriculum: move to longer contexts when held-out exact match at the current length "
          "reaches this");
ABSL_FLAG(int, gate_every, 250, "Curriculum: steps between held-out checks at the current length");
ABSL_FLAG(
    std::string, grow_from, "",
    "A trained model directory to start from instead of random weights (a fresh run only): "
    "the large model grows from the scout, twice as wide and deeper, computing the same function");
ABSL_FLAG(std::string, continue_from, "",
          "A trained model directory of this run's shape to start from (a fresh run only): its "
          "weights, a new optimizer and schedule, the curriculum at --start_records; e.g. to "
          "carry a committed model to longer contexts with --start_records=--max_records");
ABSL_FLAG(
    int, position_gaps, 0,
    "Spread each training sequence's RoPE positions over up to this many (0: off): two gaps "
    "of random size at random points before the end of the context, so short sequences carry the "
    "question-to-record distances of long ones, as positional skip-wise training (PoSE) "
    "does (measured: the committed scout's exact match at 64 records fell from 0.95 to 0.45 "
    "when 1,500 positions were left between its context and the question)");
ABSL_FLAG(std::string, multi_kind, "multi_lives",
          "Multi-hop training questions: multi_lives (\"<Name> lives in <town>.\", answered with "
          "the code: the format the committed models were trained with, which none of them "
          "learned) or multi (\"The town of <name> is <town>.\", answered \"<town>: <code>\", "
          "one lookup a token; its contexts then draw as many records as single-hop ones, and "
          "each evaluation also reports multi-hop exact match at --max_records)");
ABSL_FLAG(double, multi_share, 0.15,
          "Share of training sequences asking multi-hop questions (from 8 records on); needles "
          "keep 0.15, single-hop the rest");
ABSL_FLAG(int, recap, 8,
          "Records restated in a closing user turn of each training sequence, shuffled, with loss "
          "on their values: recall with the key just before the answer, a denser signal for the "
          "key-matching heads than the few questions (measured: held-out exact match at 8 records "
          "0.15 against 0.03 over the first 3,200 steps; 0: off)");
ABSL_FLAG(
    std::string, offset_heads, "",
    "Comma-separated offsets, e.g. 1,2: the first query heads of layer 0 start out attending "
    "that many tokens back (through their q and k biases and RoPE), the heads key matching is "
    "built from, which otherwise form only after a long plateau (fresh runs; empty: none)");
ABSL_FLAG(double, rope_theta, 1000000.0,
          "RoPE base of the trained models; a larger base leaves more slowly rotating dimensions, "
          "whose query-key products survive the distance between a question and its record");
ABSL_FLAG(
    std::string, recall_circuit, "auto",
    "Plant a recall circuit at construction (fresh runs; common/model/transformer.h): "
    "KEY:Q1[,Q2] are the distances from a record's value back to its name and from where an "
    "answer is predicted back to the name asked for; auto derives them from the tokenizer and "
    "the prompt templates (question, and recap when --recap > 0); none: no circuit");
ABSL_FLAG(
    int, freeze_circuit, 2000,
    "Steps for which the planted circuit's weights are held fixed while the rest of the model "
    "learns to use it (measured: held fixed, held-out exact match at 8 records 0.975 at step 600; "
    "free, it was trained away within 600 steps)");
ABSL_FLAG(int, vocab_size, 2048, "Tokenizer vocabulary (bytes + merges + 3 special tokens)");
ABSL_FLAG(
    int, word_pool, 600,
    "Tokenizer: train its merges on tasks drawn from this many words of --words (0: all), so that "
    "most of them become single tokens and serve as record names and values");

namespace kvstream::cli {
namespace {

// --out, or the committed models' directory.
std::string TrainOut() {
  const std::string out = absl::GetFlag(FLAGS_out);
  return out.empty() ? "testdata/models" : out;
}

using model::ModelConfig;
using model::Weights;

constexpr char kSystem[] = "Answer with the value from the context.";

ModelConfig TinyConfig(const std::string& name, int vocab, int eos) {
  ModelConfig c;
  c.architecture = "Qwen2ForCausalLM";
  c.vocab_size = vocab;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = absl::GetFlag(FLAGS_rope_theta);
  c.tie_word_embeddings = true;
  c.eos_token_ids = {eos};
  if (name == "scout") {  // ~0.5M parameters
    c.hidden_size = 96;
    c.intermediate_size = 256;
    c.num_layers = 4;
    c.num_heads = 4;
    c.num_kv_heads = 2;
  } else {  // large: ~2.8M parameters, deeper, more heads, GQA 2:1; the scout doubled in
            // width (same head_dim), so it can grow from a trained scout (--grow_from)
    c.hidden_size = 192;
    c.intermediate_size = 512;
    c.num_layers = 6;
    c.num_heads = 8;
    c.num_kv_heads = 4;
  }
  c.head_dim = c.hidden_size / c.num_heads;
  return c;
}

struct Sample {
  std::vector<int64_t> ids;
  std::vector<int64_t> targets;    // -100 where no loss
  std::vector<int64_t> positions;  // RoPE positions (--position_gaps); empty: 0..n-1
};

class Trainer {
 public:
  // `count_error` is where `gen`'s token counter records a tokenizer failure.
  Trainer(const model::Tokenizer& tok, const eval::TaskGenerator& gen,
          const absl::Status& count_error)
      : tok_(tok), gen_(gen), count_error_(count_error) {
    im_end_ = tok.TokenId("<|im_end|>");
  }

  // One training sequence: a context and up to 8 question/answer turns about it.
  // `level` is the curriculum's current cap on records per context: contexts are drawn
  // from 2..level records (short ones stay in the mix so recall learned there is kept),
  // needles are padded to about 12 tokens per level, and multi-hop samples enter at 8.
  absl::StatusOr<Sample> Make(uint64_t seed, int level) const {
    std::mt19937_64 rng(seed);
    const eval::Example ex = Draw(rng, level);
    RETURN_IF_ERROR(count_error_);
    std::vector<std::pair<std::string, std::string>> qas = ex.all_qas;
    // Ask about at most half of the records (and at most 8), each once: asking about all
    // of them lets later answers be found by elimination (with two records the second
    // answer is "the other value"), a shortcut that lowers the loss without key matching.
    // Drawing questions with replacement is no cure: a repeated question is answered by
    // copying the earlier answer, and a new one by elimination among the values not yet
    // given (measured: the scout's loss at 3 records fell 0.68 -> 0.43 in 19,000 steps
    // while held-out exact match there moved only from 0.33-0.50 to 0.40-0.63).
    std::shuffle(qas.begin(), qas.end(), rng);
    qas.resize(std::min<size_t>({qas.size(), std::max<size_t>(1, qas.size() / 2), 8}));

    Sample s;
    int context_end = 0;
    for (size_t i = 0; i < qas.size(); ++i) {
      if (i == 0) {
        ASSIGN_OR_RETURN(const model::ChatPrompt prompt,
                         model::BuildQaPrompt(tok_, ex.context, qas[0].first, {kSystem}));
        Add(s, prompt.tokens, false);
        context_end = prompt.spans.context_end;
      } else {
        RETURN_IF_ERROR(Append(s, "\n<|im_start|>user\nQuestion:", true, false));
        RETURN_IF_ERROR(Append(s, " " + qas[i].first, false, false));
        RETURN_IF_ERROR(Append(s, "<|im_end|>\n<|im_start|>assistant\n", true, false));
      }
      // The answer keeps the leading space its value has in the records, so recall is a
      // copy of the very token in the context (SQuAD scoring ignores the space).
      RETURN_IF_ERROR(Append(s, " " + qas[i].second, false, true));
      Add(s, {im_end_}, true);
    }
    RETURN_IF_ERROR(AddRecap(s, ex, rng));
    // Predict token t+1 at position t.
    s.targets.erase(s.targets.begin());
    s.targets.push_back(-100);
    // --position_gaps: gaps before the end of the context, where the records are.
    s.positions = model::GappedPositions(static_cast<int64_t>(s.ids.size()),
                                         absl::GetFlag(FLAGS_position_gaps), context_end, rng);
    return s;
  }

  // Greedy answers on held-out questions of `kind`, full recompute (no cache): exact
  // match and the mean prompt length.
  absl::StatusOr<std::pair<double, double>> Evaluate(const ModelConfig& c, const Weights& w, int n,
                                                     int records,
                                                     const std::string& kind = "single") const {
    torch::NoGradGuard no_grad;
    double em = 0, tokens = 0;
    for (int i = 0; i < n; ++i) {
      const eval::Example ex = gen_.One(kind, 0xE7A1000ull + i, records, 0);
      RETURN_IF_ERROR(count_error_);
      ASSIGN_OR_RETURN(const model::ChatPrompt prompt,
                       model::BuildQaPrompt(tok_, ex.context, ex.question, {kSystem}));
      tokens += prompt.tokens.size();
      std::vector<int64_t> ids(prompt.tokens.begin(), prompt.tokens.end());
      std::vector<int32_t> answer;
      for (int step = 0; step < 8; ++step) {
        const torch::Tensor logits = model::ForwardFull(c, w, torch::tensor(ids).unsqueeze(0));
        const int64_t next = logits[0][-1].argmax().item<int64_t>();
        if (next == im_end_) break;
        answer.push_back(static_cast<int32_t>(next));
        ids.push_back(next);
      }
      ASSIGN_OR_RETURN(const std::string text, tok_.Decode(answer));
      em += eval::ExactMatch(text, ex.answers);
    }
    return std::make_pair(em / n, tokens / n);
  }

 private:
  // The task behind one sequence: single-hop mostly; needles and multi-hop from level 8.
  // Two calls below draw rng() twice in one argument list, in an order C++ leaves to the
  // compiler; the committed models were trained with Debian 12's GCC, and reordering the
  // draws would change every sequence after the first, so they stay as they are.
  eval::Example Draw(std::mt19937_64& rng, int level) const {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    const double multi = absl::GetFlag(FLAGS_multi_share);
    const int r = 2 + static_cast<int>(rng() % static_cast<uint64_t>(std::max(1, level - 1)));
    if (u < 0.85 - multi || level < 8) return gen_.One("single", rng(), r, 0);
    if (u < 1.0 - multi) {
      return gen_.One("needle", rng(), 0,
                      48 + static_cast<int>(rng() % static_cast<uint64_t>(12 * level)));
    }
    const std::string kind = absl::GetFlag(FLAGS_multi_kind);
    if (kind == "multi") return gen_.One(kind, rng(), std::max(4, r), 0);
    return gen_.One(kind, rng(),
                    4 + 2 * static_cast<int>(rng() % static_cast<uint64_t>(std::max(1, r / 4))), 0);
  }

  static void Add(Sample& s, const std::vector<int32_t>& ids, bool loss) {
    for (int32_t id : ids) {
      s.ids.push_back(id);
      s.targets.push_back(loss ? id : -100);
    }
  }

  absl::Status Append(Sample& s, const std::string& text, bool special, bool loss) const {
    ASSIGN_OR_RETURN(const std::vector<int32_t> ids, tok_.Encode(text, special));
    Add(s, ids, loss);
    return absl::OkStatus();
  }

  // --recap: records restated in a closing user turn, with loss on their values.
  absl::Status AddRecap(Sample& s, const eval::Example& ex, std::mt19937_64& rng) const {
    const int recap = absl::GetFlag(FLAGS_recap);
    if (recap <= 0 || ex.records.empty()) return absl::OkStatus();
    std::vector<std::pair<std::string, std::string>> recs = ex.records;
    std::shuffle(recs.begin(), recs.end(), rng);
    recs.resize(std::min<size_t>(recs.size(), static_cast<size_t>(recap)));
    RETURN_IF_ERROR(Append(s, "\n<|im_start|>user\nRecap:", true, false));
    for (const auto& [name, value] : recs) {
      RETURN_IF_ERROR(Append(s, absl::StrCat(" The code of ", name, " is"), false, false));
      RETURN_IF_ERROR(Append(s, " " + value, false, true));
      RETURN_IF_ERROR(Append(s, ".", false, false));
    }
    return Append(s, "<|im_end|>", true, false);
  }

  const model::Tokenizer& tok_;
  const eval::TaskGenerator& gen_;
  const absl::Status& count_error_;
  int32_t im_end_;
};

// A model directory's or checkpoint's weights as float32 tensors to train.
absl::StatusOr<Weights> LoadFloat32(const ModelConfig& c, const std::string& dir) {
  ASSIGN_OR_RETURN(auto set, model::WeightSet::OpenDir(dir));
  return model::LoadWeights(c, *set, torch::TensorOptions().dtype(torch::kFloat32));
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status Export(const std::string& dir, const ModelConfig& c, const Weights& w,
                    const std::string& tokenizer_json, const nlohmann::json& provenance) {
  std::filesystem::create_directories(dir);
  RETURN_IF_ERROR(WriteText(dir + "/config.json", c.ToJson()));
  RETURN_IF_ERROR(model::SaveWeights(c, w, dir + "/model.safetensors"));
  RETURN_IF_ERROR(WriteText(dir + "/tokenizer.json", tokenizer_json));
  nlohmann::json gen = {
      {"eos_token_id", c.eos_token_ids}, {"do_sample", false}, {"max_new_tokens", 16}};
  RETURN_IF_ERROR(WriteText(dir + "/generation_config.json", gen.dump(2) + "\n"));
  return WriteText(dir + "/training.json", provenance.dump(2) + "\n");
}

// "3,1,8" -> {3, 1, 8}; nullopt when any comma-separated field is not an integer
// (an empty field included).
std::optional<std::vector<int>> ParseInts(absl::string_view list) {
  std::vector<int> out;
  for (absl::string_view f : absl::StrSplit(list, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(f, &v)) return std::nullopt;
    out.push_back(v);
  }
  return out;
}

struct RecallOffsets {
  int key = 0;               // from a record's value back to its name
  std::vector<int> queries;  // from each answer position back to the name asked for
};

// --recall_circuit: none, auto (derived from the templates the trainer builds: records
// "The code of X is V.", recap " The code of X is", questions "... X?" and then the
// assistant header) or explicit KEY:Q1[,Q2].
absl::StatusOr<std::optional<RecallOffsets>> ParseRecallCircuit(const model::Tokenizer& tok) {
  const std::string flag = absl::GetFlag(FLAGS_recall_circuit);
  if (flag == "none") return std::nullopt;
  RecallOffsets r;
  if (flag == "auto") {
    auto count = [&](const std::string& text, bool special) -> absl::StatusOr<int> {
      ASSIGN_OR_RETURN(const std::vector<int32_t> ids, tok.Encode(text, special));
      return static_cast<int>(ids.size());
    };
    ASSIGN_OR_RETURN(const int is, count(" is", false));
    ASSIGN_OR_RETURN(const int mark, count("?", false));
    ASSIGN_OR_RETURN(const int header, count("<|im_end|>\n<|im_start|>assistant\n", true));
    r.key = is + 1;
    if (absl::GetFlag(FLAGS_recap) > 0) r.queries.push_back(is);
    r.queries.push_back(mark + header);
    return r;
  }
  const std::vector<std::string> parts = absl::StrSplit(flag, ':');
  std::optional<std::vector<int>> queries;
  if (parts.size() == 2) queries = ParseInts(parts[1]);
  if (!queries.has_value() || !absl::SimpleAtoi(parts[0], &r.key)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--recall_circuit: expected auto, none or KEY:Q1[,Q2] with integers (e.g. 2:1,8), found '",
        flag, "'"));
  }
  r.queries = *std::move(queries);
  return r;
}

absl::Status CheckMultiHopFlags() {
  if (const std::string kind = absl::GetFlag(FLAGS_multi_kind);
      kind != "multi" && kind != "multi_lives") {
    return absl::InvalidArgumentError(
        absl::StrCat("--multi_kind: expected multi or multi_lives, found '", kind, "'"));
  }
  if (const double share = absl::GetFlag(FLAGS_multi_share); !(share >= 0 && share <= 0.85)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--multi_share: expected a share from 0 to 0.85 (needles keep 0.15), found ", share));
  }
  return absl::OkStatus();
}

// One model's training run: fresh, grown from a smaller model, or resumed from its
// checkpoint; a curriculum over context length gated by held-out exact match;
// checkpoints, evaluations and exports on the way.
class TrainingRun {
 public:
  TrainingRun(const std::string& name, const model::Tokenizer& tok, std::string tok_json,
              const eval::TaskGenerator& gen, const absl::Status& count_error)
      : name_(name),
        tok_(tok),
        tok_json_(std::move(tok_json)),
        trainer_(tok, gen, count_error),
        c_(TinyConfig(name, tok.vocab_size(), tok.TokenId("<|im_end|>"))),
        total_(absl::GetFlag(FLAGS_steps)),
        seed_(absl::GetFlag(FLAGS_train_seed)),
        ckpt_(absl::StrCat(absl::GetFlag(FLAGS_ckpt_dir), "/", name)),
        level_(absl::GetFlag(FLAGS_start_records)) {}

  absl::Status Run() {
    if (const int gaps = absl::GetFlag(FLAGS_position_gaps); gaps > c_.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("--position_gaps: expected at most the models' max_position_embeddings (",
                       c_.max_position_embeddings, "), found ", gaps));
    }
    std::filesystem::create_directories(ckpt_);
    w_ = model::InitWeights(c_, seed_ + (name_ == "large" ? 100 : 0), 0.02);
    const bool resume = std::filesystem::exists(ckpt_ + "/state.json");
    const int stop = absl::GetFlag(FLAGS_stop_after);
    const int last = stop > 0 ? std::min(stop, total_) : total_;
    RETURN_IF_ERROR(resume ? Restore(last) : Start());
    HoldPlanted();
    RETURN_IF_ERROR(MakeOptimizer(resume));
    LogStart(resume);
    start_ = std::chrono::steady_clock::now();
    const double max_minutes = absl::GetFlag(FLAGS_max_minutes);
    for (; step_ < last; ++step_) {
      RETURN_IF_ERROR(Step());
      RETURN_IF_ERROR(Gate());
      const bool out_of_time = max_minutes > 0 && Minutes() >= max_minutes;
      if ((step_ + 1) % absl::GetFlag(FLAGS_checkpoint_every) == 0 || out_of_time) {
        ++step_;
        RETURN_IF_ERROR(Save());
        if (step_ % absl::GetFlag(FLAGS_eval_every) == 0 || out_of_time) {
          RETURN_IF_ERROR(EvaluateAndExport());
        }
        --step_;
      }
      if (out_of_time) {
        std::printf("[%s] time budget of %.0f minutes reached at step %d\n", name_.c_str(),
                    max_minutes, step_ + 1);
        return absl::OkStatus();
      }
    }
    // --stop_after exports its step whatever it scores; a whole run, its best so far
    // (nothing twice: a step evaluated or exported in the loop is not again). The
    // checkpoint is written either way, with that evaluation in its history.
    const absl::Status exported = EvaluateAndExport(/*always=*/stop > 0);
    RETURN_IF_ERROR(Save());
    return exported;
  }

 private:
  // Weights and progress from the checkpoint in --ckpt_dir, which must not be past the
  // step the run is to stop at, nor carry on another model than --continue_from names.
  absl::Status Restore(int last) {
    RETURN_IF_ERROR(RestoreState());
    if (step_ > last) {
      return absl::InvalidArgumentError(
          absl::StrCat("--steps / --stop_after: expected the checkpoint in ", ckpt_,
                       " at or before step ", last, "; found step ", step_));
    }
    const std::string cont = absl::GetFlag(FLAGS_continue_from);
    if (!cont.empty() && cont != continued_from_) {
      return absl::InvalidArgumentError(
          absl::StrCat("--continue_from=", cont, ": expected the checkpoint in ", ckpt_,
                       " to carry that model on; found it continued from '", continued_from_, "'"));
    }
    // A resumed run draws the questions the run before it drew.
    if (ckpt_multi_.first != absl::GetFlag(FLAGS_multi_kind) ||
        ckpt_multi_.second != absl::GetFlag(FLAGS_multi_share)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--multi_kind / --multi_share: expected the checkpoint's ",
                       ckpt_multi_.first, " / ", ckpt_multi_.second, " to resume it; found ",
                       absl::GetFlag(FLAGS_multi_kind), " / ", absl::GetFlag(FLAGS_multi_share)));
    }
    return absl::OkStatus();
  }

  absl::Status RestoreState() {
    ASSIGN_OR_RETURN(w_, LoadFloat32(c_, ckpt_));
    std::ifstream in(ckpt_ + "/state.json");
    const nlohmann::json state = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    double theta = 10000.0;
    try {  // value() throws on a field of another type
      if (!state.is_object()) throw std::invalid_argument("not a JSON object");
      step_ = state.value("step", 0);
      level_ = state.value("level", level_);
      circuit_ = state.value("recall_circuit", false);
      grown_from_ = state.value("grown_from", "");
      continued_from_ = state.value("continued_from", "");
      ckpt_multi_ = {state.value("multi_kind", "multi_lives"), state.value("multi_share", 0.15)};
      theta = state.value("rope_theta", theta);
      if (state.contains("evals")) evals_ = state["evals"];
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          ckpt_, "/state.json: expected the checkpoint's state (step, level, ...): ", e.what()));
    }
    // Checkpoints hold weights only; the shape comes from the flags, and so does RoPE's base.
    if (theta != c_.rope_theta) {
      return absl::InvalidArgumentError(absl::StrCat("--rope_theta: the checkpoint in ", ckpt_,
                                                     " was trained with ", theta, ", found ",
                                                     c_.rope_theta));
    }
    return absl::OkStatus();
  }

  // A fresh run's weights: grown, continued or planted.
  absl::Status Start() {
    const std::string grow = absl::GetFlag(FLAGS_grow_from);
    const std::string cont = absl::GetFlag(FLAGS_continue_from);
    if (!grow.empty() && !cont.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--continue_from: expected it or --grow_from, not both; found --grow_from=", grow,
          " and --continue_from=", cont));
    }
    if (!cont.empty()) return ContinueFrom(cont);
    return grow.empty() ? PlantFresh() : GrowFrom(grow);
  }

  // Token ids only mean the same in two models with the same tokenizer; equal vocabulary
  // sizes are not enough.
  absl::Status SameTokenizer(const std::string& flag, const std::string& dir) const {
    std::ifstream tin(dir + "/tokenizer.json", std::ios::binary);
    const std::string other((std::istreambuf_iterator<char>(tin)),
                            std::istreambuf_iterator<char>());
    if (other == tok_json_) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        flag, "=", dir, ": expected its tokenizer.json to be the one this run trains with (",
        TrainOut(), "/tokenizer.json); found ", tin.is_open() ? "a different one" : "none"));
  }

  // --continue_from: a trained model of this shape, on with a new optimizer and schedule.
  absl::Status ContinueFrom(const std::string& from) {
    RETURN_IF_ERROR(SameTokenizer("--continue_from", from));
    ASSIGN_OR_RETURN(const ModelConfig had, ModelConfig::Load(from + "/config.json"));
    if (had.num_layers != c_.num_layers || had.hidden_size != c_.hidden_size ||
        had.num_heads != c_.num_heads || had.num_kv_heads != c_.num_kv_heads ||
        had.intermediate_size != c_.intermediate_size || had.rope_theta != c_.rope_theta) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--continue_from=", from, ": expected the ", name_, " shape (", c_.num_layers,
          " layers, hidden ", c_.hidden_size, ", intermediate ", c_.intermediate_size, ", heads ",
          c_.num_heads, "/", c_.num_kv_heads, ", rope_theta ", c_.rope_theta, "); found ",
          had.num_layers, " layers, hidden ", had.hidden_size, ", intermediate ",
          had.intermediate_size, ", heads ", had.num_heads, "/", had.num_kv_heads, ", rope_theta ",
          had.rope_theta));
    }
    ASSIGN_OR_RETURN(w_, LoadFloat32(c_, from));
    continued_from_ = from;
    std::printf("[%s] continued from %s, curriculum at %d records\n", name_.c_str(), from.c_str(),
                level_);
    return absl::OkStatus();
  }

  // --grow_from: the smaller model's function in the wider, deeper shape.
  absl::Status GrowFrom(const std::string& from) {
    RETURN_IF_ERROR(SameTokenizer("--grow_from", from));
    ASSIGN_OR_RETURN(const ModelConfig small, ModelConfig::Load(from + "/config.json"));
    ASSIGN_OR_RETURN(const Weights sw, LoadFloat32(small, from));
    ASSIGN_OR_RETURN(w_, model::GrowWeights(small, sw, c_, 1e-3, seed_ + 200));
    grown_from_ = from;
    std::ifstream in(from + "/training.json");
    const nlohmann::json prov = nlohmann::json::parse(in, nullptr, false);
    if (prov.is_object() && prov.contains("curriculum_records") &&
        prov["curriculum_records"].is_number_integer()) {
      level_ = prov["curriculum_records"].get<int>();
    }
    std::printf("[%s] grown from %s (%d layers, hidden %d), curriculum at %d records\n",
                name_.c_str(), from.c_str(), small.num_layers, small.hidden_size, level_);
    return absl::OkStatus();
  }

  // Fresh weights with the planted heads --offset_heads and --recall_circuit ask for.
  absl::Status PlantFresh() {
    const std::string list = absl::GetFlag(FLAGS_offset_heads);
    std::optional<std::vector<int>> parsed = list.empty() ? std::vector<int>{} : ParseInts(list);
    if (!parsed.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--offset_heads: expected integers separated by commas, found '", list, "'"));
    }
    const std::vector<int> offsets = *std::move(parsed);
    RETURN_IF_ERROR(model::PlantOffsetHeads(c_, w_, offsets));
    ASSIGN_OR_RETURN(const std::optional<RecallOffsets> rc, ParseRecallCircuit(tok_));
    if (rc.has_value()) {
      if (!offsets.empty()) {
        return absl::InvalidArgumentError(
            "--offset_heads: expected --recall_circuit=none with it (both plant layer 0's first "
            "heads), found --recall_circuit=" +
            absl::GetFlag(FLAGS_recall_circuit));
      }
      RETURN_IF_ERROR(model::PlantRecallCircuit(c_, w_, rc->key, rc->queries, seed_ + 300));
      circuit_ = true;
      std::printf(
          "[%s] recall circuit: values see their names %d tokens back, answers the names asked for "
          "%s back; held for %d steps\n",
          name_.c_str(), rc->key, absl::StrJoin(rc->queries, ", ").c_str(),
          absl::GetFlag(FLAGS_freeze_circuit));
    }
    if (!offsets.empty()) {
      std::printf("[%s] layer 0: query heads 0-%zu start out attending %s tokens back\n",
                  name_.c_str(), offsets.size() - 1, absl::StrJoin(offsets, ", ").c_str());
    }
    return absl::OkStatus();
  }

  // A planted circuit is held at its values for the first --freeze_circuit steps, while
  // the rest of the model learns to use it.
  void HoldPlanted() {
    if (!circuit_ || step_ >= absl::GetFlag(FLAGS_freeze_circuit)) return;
    model::LayerWeights& l0 = w_.layers[0];
    model::LayerWeights& l1 = w_.layers[1];
    for (torch::Tensor* t :
         {&l0.v_w, &l0.o_w, &l0.q_b, &l0.k_b, &l1.q_w, &l1.k_w, &l1.q_b, &l1.k_b}) {
      if (t->defined()) frozen_.emplace_back(*t, t->detach().clone());
    }
  }

  // AdamW, weight decay on matrices only; its state comes back with a checkpoint.
  absl::Status MakeOptimizer(bool resume) {
    std::vector<torch::Tensor> matrices, vectors;
    for (torch::Tensor& t : w_.Parameters()) {
      t.requires_grad_(true);
      (t.dim() >= 2 ? matrices : vectors).push_back(t);
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    for (const auto& [params, decay] :
         {std::make_pair(matrices, 0.1), std::make_pair(vectors, 0.0)}) {
      groups.emplace_back(
          params, std::make_unique<torch::optim::AdamWOptions>(
                      torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).weight_decay(decay)));
    }
    opt_ = std::make_unique<torch::optim::AdamW>(std::move(groups));
    const std::string state = ckpt_ + "/optimizer.pt";
    if (!resume || !std::filesystem::exists(state)) return absl::OkStatus();
    try {
      torch::load(*opt_, state);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(state, ": expected the optimizer state of this model: ", e.what()));
    }
    return absl::OkStatus();
  }

  void LogStart(bool resume) const {
    int64_t n_params = 0;
    for (const auto& t : w_.Parameters()) n_params += t.numel();
    std::printf(
        "[%s] %lld parameters, %d layers, hidden %d, heads %d/%d, vocab %d; %s at step %d of %d\n",
        name_.c_str(), static_cast<long long>(n_params), c_.num_layers, c_.hidden_size,
        c_.num_heads, c_.num_kv_heads, c_.vocab_size, resume ? "resuming" : "starting", step_,
        total_);
    std::fflush(stdout);
  }

  // Linear warm-up, then cosine decay to a tenth of the peak.
  double LearningRate() const {
    const double peak = absl::GetFlag(FLAGS_lr);
    const int warmup = absl::GetFlag(FLAGS_warmup);
    if (step_ < warmup) return peak * (step_ + 1) / warmup;
    return peak *
           (0.1 +
            0.9 * 0.5 * (1 + std::cos(M_PI * (step_ - warmup) / std::max(1, total_ - warmup))));
  }

  absl::StatusOr<std::vector<Sample>> Batch() {
    std::vector<Sample> samples;
    const int batch = absl::GetFlag(FLAGS_batch);
    for (int b = 0; b < batch; ++b) {
      ASSIGN_OR_RETURN(
          Sample s, trainer_.Make(seed_ * 7919 + static_cast<uint64_t>(step_) * 131 + b, level_));
      tokens_seen_ += static_cast<int64_t>(s.ids.size());
      samples.push_back(std::move(s));
    }
    // Micro-batches of similar lengths (less padding; every activation stays below
    // glibc's 32 MiB mmap threshold, so no step pays fresh page faults).
    std::sort(samples.begin(), samples.end(),
              [](const Sample& a, const Sample& b) { return a.ids.size() < b.ids.size(); });
    return samples;
  }

  // Forward and backward over samples [first, first + n), padded to the longest; the
  // loss is a sum over answer tokens divided by the whole batch's answer tokens.
  double Backward(const std::vector<Sample>& samples, int first, int n, int64_t answer_tokens) {
    size_t max_len = 0;
    for (int b = 0; b < n; ++b) max_len = std::max(max_len, samples[first + b].ids.size());
    std::vector<int64_t> ids(n * max_len, 0), targets(n * max_len, -100), positions(n * max_len);
    bool spread = false;
    for (int b = 0; b < n; ++b) {
      const Sample& smp = samples[first + b];
      std::copy(smp.ids.begin(), smp.ids.end(), ids.begin() + b * max_len);
      std::copy(smp.targets.begin(), smp.targets.end(), targets.begin() + b * max_len);
      // Padding follows the last position (causal attention keeps it out of the loss).
      const int64_t shift = smp.positions.empty()
                                ? 0
                                : smp.positions.back() + 1 - static_cast<int64_t>(smp.ids.size());
      for (size_t j = 0; j < max_len; ++j) {
        positions[b * max_len + j] =
            j < smp.positions.size() ? smp.positions[j] : shift + static_cast<int64_t>(j);
      }
      spread = spread || !smp.positions.empty();
    }
    const auto L = static_cast<int64_t>(max_len);
    const torch::Tensor y = torch::tensor(targets);
    const torch::Tensor at = (y >= 0).nonzero().squeeze(1);
    const torch::Tensor pos = torch::tensor(positions).view({n, L});
    const torch::Tensor hidden = model::ForwardHidden(c_, w_, torch::tensor(ids).view({n, L}),
                                                      nullptr, spread ? &pos : nullptr)
                                     .view({n * L, -1});
    const torch::Tensor logits = torch::linear(hidden.index_select(0, at), w_.lm_head);
    const torch::Tensor loss =
        torch::nn::functional::cross_entropy(
            logits, y.index_select(0, at),
            torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) /
        static_cast<double>(std::max<int64_t>(1, answer_tokens));
    loss.backward();
    return loss.item<double>();
  }

  // One optimizer step over --batch sequences, gradients summed over micro-batches.
  absl::Status Step() {
    const double lr = LearningRate();
    for (auto& g : opt_->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    }
    ASSIGN_OR_RETURN(const std::vector<Sample> samples, Batch());
    int64_t answer_tokens = 0;
    for (const Sample& smp : samples) {
      answer_tokens +=
          std::count_if(smp.targets.begin(), smp.targets.end(), [](int64_t t) { return t >= 0; });
    }
    opt_->zero_grad();
    double loss = 0;
    const int batch = static_cast<int>(samples.size());
    const int micro = std::max(1, absl::GetFlag(FLAGS_micro_batch));
    for (int first = 0; first < batch; first += micro) {
      loss += Backward(samples, first, std::min(micro, batch - first), answer_tokens);
    }
    torch::nn::utils::clip_grad_norm_(w_.Parameters(), 1.0);
    opt_->step();
    if (!frozen_.empty() && step_ < absl::GetFlag(FLAGS_freeze_circuit)) {
      torch::NoGradGuard no_grad;
      for (auto& [t, v] : frozen_) t.copy_(v);
    }
    LogLoss(loss, lr);
    return absl::OkStatus();
  }

  void LogLoss(double loss, double lr) {
    loss_acc_ += loss;
    ++loss_n_;
    // Running mean of the answer loss over the last ~100 steps.
    loss_ema_ = loss_ema_ < 0 ? loss : 0.99 * loss_ema_ + 0.01 * loss;
    if ((step_ + 1) % 50 != 0) return;
    std::printf(
        "[%s] step %d loss %.4f (running %.4f) records<=%d lr %.2e tokens/s %.0f elapsed %.1f "
        "min\n",
        name_.c_str(), step_ + 1, loss_acc_ / loss_n_, loss_ema_, level_, lr,
        tokens_seen_ / (Minutes() * 60.0), Minutes());
    std::fflush(stdout);
    loss_acc_ = 0;
    loss_n_ = 0;
  }

  // The curriculum's gate is held-out exact match at the current length, not the
  // training loss: the loss also falls through shortcuts (e.g. answering later questions
  // of a sequence by elimination) that teach no key matching.
  absl::Status Gate() {
    const int max_records = absl::GetFlag(FLAGS_max_records);
    if (level_ >= max_records || (step_ + 1) % absl::GetFlag(FLAGS_gate_every) != 0) {
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(const auto result,
                     trainer_.Evaluate(c_, w_, absl::GetFlag(FLAGS_eval_questions), level_));
    std::printf("[%s] step %d: held-out exact match %.3f at %d records\n", name_.c_str(), step_ + 1,
                result.first, level_);
    if (result.first >= absl::GetFlag(FLAGS_advance_em)) {
      level_ = std::min(max_records, level_ + std::max(1, level_ / 4));
      std::printf("[%s] step %d: curriculum advances to %d records\n", name_.c_str(), step_ + 1,
                  level_);
    }
    return absl::OkStatus();
  }

  // Weights, optimizer and progress (with provenance that outlives a restart).
  absl::Status Save() {
    RETURN_IF_ERROR(model::SaveWeights(c_, w_, ckpt_ + "/model.safetensors"));
    try {
      torch::save(*opt_, ckpt_ + "/optimizer.pt");
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("cannot write ", ckpt_, "/optimizer.pt: ", e.what()));
    }
    const nlohmann::json state = {{"step", step_},
                                  {"level", level_},
                                  {"rope_theta", c_.rope_theta},
                                  {"recall_circuit", circuit_},
                                  {"grown_from", grown_from_},
                                  {"continued_from", continued_from_},
                                  {"multi_kind", absl::GetFlag(FLAGS_multi_kind)},
                                  {"multi_share", absl::GetFlag(FLAGS_multi_share)},
                                  {"evals", evals_}};
    return WriteText(ckpt_ + "/state.json", state.dump() + "\n");
  }

  // Held-out exact match at --max_records; the best model so far is exported (and the
  // current one when `always`).
  absl::Status EvaluateAndExport(bool always = false) {
    if (exported_step_ == step_) return absl::OkStatus();
    ASSIGN_OR_RETURN(const double em, Evaluation());
    if (em < best_em_ && !always) return absl::OkStatus();
    best_em_ = std::max(best_em_, em);
    exported_step_ = step_;
    const nlohmann::json prov = {{"command", "kvstream train-tiny"},
                                 {"step", step_},
                                 {"steps", total_},
                                 {"seed", seed_},
                                 {"lr", absl::GetFlag(FLAGS_lr)},
                                 {"batch", absl::GetFlag(FLAGS_batch)},
                                 {"curriculum_records", level_},
                                 {"single_token_names", absl::GetFlag(FLAGS_single_token_names)},
                                 {"grown_from", grown_from_},
                                 {"continued_from", continued_from_},
                                 {"position_gaps", absl::GetFlag(FLAGS_position_gaps)},
                                 {"multi_kind", absl::GetFlag(FLAGS_multi_kind)},
                                 {"multi_share", absl::GetFlag(FLAGS_multi_share)},
                                 {"recap", absl::GetFlag(FLAGS_recap)},
                                 {"recall_circuit", circuit_},
                                 {"freeze_circuit", absl::GetFlag(FLAGS_freeze_circuit)},
                                 {"evals", evals_}};
    return Export(absl::StrCat(TrainOut(), "/", name_), c_, w_, tok_json_, prov);
  }

  // This step's held-out exact match, evaluated once and kept in the run's history.
  absl::StatusOr<double> Evaluation() {
    if (!evals_.empty() && evals_.back()["step"] == step_) {
      return evals_.back()["single_hop_em"].get<double>();
    }
    // Held-out exact match and prompt length on `kind`, printed as it is measured.
    auto measure = [&](const std::string& kind,
                       const char* label) -> absl::StatusOr<std::pair<double, double>> {
      ASSIGN_OR_RETURN(const auto result,
                       trainer_.Evaluate(c_, w_, absl::GetFlag(FLAGS_eval_questions),
                                         absl::GetFlag(FLAGS_max_records), kind));
      std::printf("[%s] step %d eval: exact match %.3f on held-out %s (%.0f prompt tokens)\n",
                  name_.c_str(), step_, result.first, label, result.second);
      std::fflush(stdout);
      return result;
    };
    ASSIGN_OR_RETURN(const auto single, measure("single", "single-hop"));
    const auto [em, prompt_tokens] = single;
    evals_.push_back({{"step", step_}, {"single_hop_em", em}, {"prompt_tokens", prompt_tokens}});
    if (absl::GetFlag(FLAGS_multi_kind) == "multi") {
      ASSIGN_OR_RETURN(const auto multi, measure("multi", "multi-hop"));
      evals_.back()["multi_hop_em"] = multi.first;
    }
    return em;
  }

  double Minutes() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count() / 60.0;
  }

  const std::string name_;
  const model::Tokenizer& tok_;
  const std::string tok_json_;
  const Trainer trainer_;
  const ModelConfig c_;
  const int total_;
  const uint64_t seed_;
  const std::string ckpt_;
  Weights w_;
  int step_ = 0;
  int exported_step_ = -1;
  int level_;
  bool circuit_ = false;    // a planted recall circuit, held for the first --freeze_circuit steps
  std::string grown_from_;  // provenance that outlives a restart
  std::string continued_from_;
  // The checkpoint's --multi_kind / --multi_share (before they existed: the defaults).
  std::pair<std::string, double> ckpt_multi_ = {"multi_lives", 0.15};
  nlohmann::json evals_ = nlohmann::json::array();
  std::vector<std::pair<torch::Tensor, torch::Tensor>> frozen_;
  std::unique_ptr<torch::optim::AdamW> opt_;
  std::chrono::steady_clock::time_point start_;
  double loss_acc_ = 0, loss_ema_ = -1, best_em_ = -1;
  int loss_n_ = 0;
  int64_t tokens_seen_ = 0;
};

// The byte-level BPE tokenizer both models share (scout mode needs one vocabulary),
// its merges trained on tasks over --word_pool words; false after printing why not.
bool TrainTokenizer(const std::vector<std::string>& words, const std::string& tok_path) {
  std::vector<std::string> pool = words;
  if (const int n = absl::GetFlag(FLAGS_word_pool); n > 0 && n < static_cast<int>(pool.size())) {
    std::shuffle(pool.begin(), pool.end(), std::mt19937_64(0x9001));
    pool.resize(n);
    std::sort(pool.begin(), pool.end());
  }
  eval::TaskGenerator gen(pool);
  std::vector<std::string> corpus;
  for (int i = 0; i < 3000; ++i) {
    // The multi-hop format the committed tokenizer was trained on.
    const char* kind = i % 3 == 0 ? "single" : i % 3 == 1 ? "multi_lives" : "needle";
    const eval::Example ex = gen.One(kind, 0xC0FFEEull + i, 30, 300);
    corpus.push_back(ex.context);
    for (const auto& [q, a] : ex.all_qas) corpus.push_back(absl::StrCat("Question: ", q, " ", a));
  }
  corpus.push_back(kSystem);
  model::BpeTrainOptions bo;
  bo.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  auto json = model::TrainBpeTokenizer(corpus, bo);
  if (!json.ok() || !WriteText(tok_path, *json).ok()) {
    std::fprintf(stderr, "kvstream train-tiny: tokenizer: %s\n",
                 std::string(json.status().message()).c_str());
    return false;
  }
  auto trained = model::Tokenizer::FromJson(*json, tok_path);
  int whole = 0;
  for (const std::string& w : pool) {
    if (!trained.ok()) break;
    const absl::StatusOr<std::vector<int32_t>> ids = (*trained)->Encode(" " + w, false);
    if (ids.ok() && ids->size() == 1) ++whole;
  }
  std::printf("tokenizer: %d tokens written to %s; %d of %zu task words are single tokens\n",
              trained.ok() ? (*trained)->vocab_size() : -1, tok_path.c_str(), whole, pool.size());
  return true;
}

}  // namespace

int RunTrainTiny() {
  const std::string which = absl::GetFlag(FLAGS_train);
  if (which != "tokenizer" && which != "scout" && which != "large" && which != "both") {
    std::fprintf(
        stderr,
        "kvstream train-tiny: --train must be tokenizer, scout, large or both; found '%s'\n",
        which.c_str());
    return 2;
  }
  if (which == "both" && !absl::GetFlag(FLAGS_continue_from).empty()) {
    std::fprintf(stderr,
                 "kvstream train-tiny: --continue_from: expected --train=scout or --train=large "
                 "(one model's directory), found --train=both\n");
    return 2;
  }
  if (const absl::Status flags = CheckMultiHopFlags(); !flags.ok()) {
    std::fprintf(stderr, "kvstream train-tiny: %s\n", std::string(flags.message()).c_str());
    return 2;
  }
  model::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  auto words = eval::LoadWords(absl::GetFlag(FLAGS_words));
  if (!words.ok()) {
    std::fprintf(stderr, "kvstream train-tiny: %s\n",
                 std::string(words.status().message()).c_str());
    return 1;
  }
  const std::string out = TrainOut();
  std::filesystem::create_directories(out);
  const std::string tok_path = out + "/tokenizer.json";

  // Tokenizer: trained once and shared by both models (scout mode needs one vocabulary).
  if ((which == "tokenizer" || !std::filesystem::exists(tok_path)) &&
      !TrainTokenizer(*words, tok_path)) {
    return 1;
  }
  if (which == "tokenizer") return 0;
  auto tok = model::Tokenizer::Load(tok_path);
  if (!tok.ok()) {
    std::fprintf(stderr, "kvstream train-tiny: %s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  std::ifstream tin(tok_path);
  std::stringstream tss;
  tss << tin.rdbuf();
  const model::Tokenizer& t = **tok;
  absl::Status count_error;
  eval::TaskGenerator gen(*words, model::CountTokens(t, count_error));
  gen.set_single_token_names(absl::GetFlag(FLAGS_single_token_names));
  if (!count_error.ok()) {
    std::fprintf(stderr, "kvstream train-tiny: tokenizing task words: %s\n",
                 std::string(count_error.message()).c_str());
    return 1;
  }
  std::printf("tasks: %zu single-token value words\n", gen.values().size());
  for (const std::string name : {"scout", "large"}) {
    if (which != "both" && which != name) continue;
    const absl::Status st = TrainingRun(name, t, tss.str(), gen, count_error).Run();
    if (!st.ok()) {
      std::fprintf(stderr, "kvstream train-tiny: %s: %s\n", name.c_str(),
                   std::string(st.message()).c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace kvstream::cli
