// kvstream-model-bench: prefill and decode speed (tokens/s) of model directories, with a
// float32 matmul of the same hidden size measured in the same run as the machine's
// baseline. Prefill is reported as the best and the median of --repeats runs: the
// median shows what a request meets (with --system_allocator, glibc's defaults, it falls
// far below the best; see common/base/memory.h). With --estimate_steps, also the edge's
// per-request quality estimate (the probe's reference and one plan's estimate, INT4 over
// the whole cache) as a share of the selection prefill (with attention statistics) and
// of the plain prefill of the same prompt, best of --repeats each.
//
// With --lengths=512,2048,...,16384 it measures long contexts instead: for each prompt
// length (increasing), prefill tokens/s (best of --repeats), decode tokens/s with that
// context in the cache, the process's peak RSS so far, and both rates as ratios to the
// first length's, measured in the same run.
//
//   build/bin/kvstream-model-bench [--models=DIR,DIR] [--prompt=512] [--decode=64]
//                                  [--threads=0] [--dtype=f32|bf16] [--system_allocator]
//                                  [--estimate_steps=4] [--lengths=512,2048,8192]
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/base/memory.h"
#include "common/codec/spec.h"
#include "common/model/model.h"
#include "common/model/quality_probe.h"

ABSL_FLAG(std::string, models, "testdata/models-2k/scout,testdata/models-2k/large",
          "Model directories, comma separated");
ABSL_FLAG(int, prompt, 512, "Prompt tokens to prefill");
ABSL_FLAG(int, decode, 64, "Tokens to decode one at a time");
ABSL_FLAG(int, threads, 0, "libtorch threads (0: every core)");
ABSL_FLAG(std::string, dtype, "f32", "Compute dtype: f32 or bf16");
ABSL_FLAG(int, repeats, 9, "Runs per measurement (prefill: best and median; decode: best)");
ABSL_FLAG(bool, system_allocator, false,
          "Leave glibc's allocator at its defaults instead of keeping freed memory for reuse as "
          "the daemons do");
ABSL_FLAG(std::string, lengths, "",
          "Long-context sweep: prompt lengths, increasing, comma separated (replaces --prompt "
          "and the matmul baseline); empty: off");
ABSL_FLAG(int, estimate_steps, 4,
          "Steps of the quality estimate to time against the prefill (0: skip)");

namespace {

double Seconds(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
}

// Best-of-`repeats` seconds of the selection prefill (statistics, the last token's
// logits) and of the quality estimate after it (reference + one INT4 plan), on a prompt
// whose last 16 tokens are the question.
void TimeEstimate(kvstream::model::Model& model, const std::vector<int32_t>& tokens, int steps,
                  int repeats, double plain_prefill) {
  kvstream::select::PromptSpans spans;
  const int n = static_cast<int>(tokens.size());
  spans.context_end = n - 17;
  spans.question_begin = n - 17;
  spans.question_end = n - 1;
  const auto plan = kvstream::codec::ParsePlan("int4").value();
  double best_stats = 1e30, best_probe = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    auto pre = kvstream::model::PrefillForSelection(model, tokens, spans);
    best_stats = std::min(best_stats, Seconds(t0));
    if (!pre.ok()) return;
    t0 = std::chrono::steady_clock::now();
    auto probe = kvstream::model::QualityProbe::Create(model, *pre->cache, tokens.back(), steps, {},
                                                       &pre->last_logits);
    if (!probe.ok() || !(*probe)->Estimate({}, plan).ok()) return;
    best_probe = std::min(best_probe, Seconds(t0));
  }
  std::printf(
      "  estimate (%d steps, reference + one INT4 plan): %.2f ms = %.1f%% of the "
      "selection prefill (%.2f ms), %.1f%% of the plain prefill (%.2f ms)\n",
      steps, best_probe * 1e3, 100 * best_probe / best_stats, best_stats * 1e3,
      100 * best_probe / plain_prefill, plain_prefill * 1e3);
}

// This process's VmRSS or VmHWM (peak) in bytes, from /proc/self/status; 0 if unknown.
double ProcBytes(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + key.size()) * 1024;
  }
  return 0;
}

double WeightFileBytes(const std::string& dir) {
  double bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") bytes += static_cast<double>(e.file_size());
  }
  return bytes;
}

// A prompt of `n` tokens, the same for every run.
std::vector<int32_t> PromptTokens(const kvstream::model::ModelConfig& c, int n) {
  std::vector<int32_t> tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = (i * 7 + 3) % c.vocab_size;
  return tokens;
}

struct Timing {
  std::vector<double> prefills;  // seconds of each run's prefill, sorted
  double best_decode = 1e30;     // seconds of the fastest run's --decode steps
};

// --repeats runs, each a prefill of `tokens` then --decode steps one token at a time
// with that context in the cache; nullopt when a call fails.
std::optional<Timing> TimePrefillAndDecode(kvstream::model::Model& model,
                                           const std::vector<int32_t>& tokens) {
  const int n = static_cast<int>(tokens.size()), n_decode = absl::GetFlag(FLAGS_decode);
  const int vocab = model.config().vocab_size;
  Timing t;
  for (int r = 0; r < absl::GetFlag(FLAGS_repeats); ++r) {
    auto t0 = std::chrono::steady_clock::now();
    auto pre = model.Prefill(tokens);
    t.prefills.push_back(Seconds(t0));
    if (!pre.ok()) return std::nullopt;
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n_decode; ++i) {
      if (!model.Extend(*pre->cache, {i % vocab}, {n + i}).ok()) return std::nullopt;
    }
    t.best_decode = std::min(t.best_decode, Seconds(t0));
  }
  std::sort(t.prefills.begin(), t.prefills.end());
  return t;
}

// --lengths: prefill and decode speed and peak memory by context length, as ratios to the
// first length's.
int LengthSweep(kvstream::model::Model& model, const std::string& dir,
                const std::vector<int>& lengths) {
  const auto& c = model.config();
  const int repeats = absl::GetFlag(FLAGS_repeats), n_decode = absl::GetFlag(FLAGS_decode);
  std::printf("%s (%s): prefill best of %d, decode %d tokens after it\n", dir.c_str(),
              absl::GetFlag(FLAGS_dtype).c_str(), repeats, n_decode);
  std::printf("%8s %14s %9s %14s %9s %14s\n", "tokens", "prefill tok/s", "ratio", "decode tok/s",
              "ratio", "peak RSS MB");
  double first_prefill = 0, first_decode = 0;
  for (const int n : lengths) {
    if (n < 2 || n + n_decode >= c.max_position_embeddings) {
      std::fprintf(stderr, "--lengths: %d tokens plus %d decoded do not fit %d positions\n", n,
                   n_decode, c.max_position_embeddings);
      return 1;
    }
    const std::optional<Timing> t = TimePrefillAndDecode(model, PromptTokens(c, n));
    if (!t) return 1;
    const double prefill = n / t->prefills.front(), decode = n_decode / t->best_decode;
    if (first_prefill == 0) {
      first_prefill = prefill;
      first_decode = decode;
    }
    std::printf("%8d %14.1f %9.2f %14.2f %9.2f %14.0f\n", n, prefill, prefill / first_prefill,
                decode, decode / first_decode, ProcBytes("VmHWM") / 1e6);
    std::fflush(stdout);
  }
  return 0;
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  kvstream::model::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  if (absl::GetFlag(FLAGS_system_allocator)) {
    std::printf("allocator: glibc defaults (freed memory returned to the system)\n");
  } else {
    std::printf("%s\n", kvstream::base::KeepFreedMemoryForReuse().c_str());  // as the daemons run
  }
  const int n_prompt = absl::GetFlag(FLAGS_prompt), n_decode = absl::GetFlag(FLAGS_decode);
  // Checked before any model loads (a large one takes a while).
  std::vector<int> lengths;
  if (!absl::GetFlag(FLAGS_lengths).empty()) {
    for (absl::string_view v : absl::StrSplit(absl::GetFlag(FLAGS_lengths), ',')) {
      int n = 0;
      if (!absl::SimpleAtoi(v, &n) || (!lengths.empty() && n <= lengths.back())) {
        std::fprintf(stderr, "--lengths: expected increasing integers, found '%s'\n",
                     std::string(v).c_str());
        return 1;
      }
      lengths.push_back(n);
    }
  }
  if (lengths.empty()) {
    std::printf("%-28s %8s %6s %14s %14s %14s %12s\n", "model", "params", "dtype", "prefill tok/s",
                "(median)", "decode tok/s", "matmul GF/s");
  }
  for (absl::string_view dir :
       absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty())) {
    kvstream::model::RuntimeOptions ro;
    ro.dtype = absl::GetFlag(FLAGS_dtype);
    const double rss_before = ProcBytes("VmRSS");
    auto model = kvstream::model::Model::Load(std::string(dir), ro);
    const double rss_loaded = ProcBytes("VmRSS");
    if (!model.ok()) {
      std::fprintf(stderr, "%s: %s\n", std::string(dir).c_str(),
                   std::string(model.status().message()).c_str());
      return 1;
    }
    if (!lengths.empty()) {
      if (LengthSweep(**model, std::string(dir), lengths) != 0) return 1;
      continue;
    }
    const auto& c = (*model)->config();
    const std::vector<int32_t> tokens = PromptTokens(c, n_prompt);
    const std::optional<Timing> timing = TimePrefillAndDecode(**model, tokens);
    if (!timing) return 1;
    const std::vector<double>& prefills = timing->prefills;
    const double best_decode = timing->best_decode;
    // Baseline: [prompt, hidden] x [hidden, intermediate] float32 matmul, same threads.
    torch::NoGradGuard ng;
    const torch::Tensor a = torch::randn({n_prompt, c.hidden_size}),
                        b = torch::randn({c.hidden_size, c.intermediate_size});
    double best_mm = 1e30;
    for (int r = 0; r < 20; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      const torch::Tensor y = torch::matmul(a, b);
      (void)y.sum().item<float>();
      best_mm = std::min(best_mm, Seconds(t0));
    }
    const double best_prefill = prefills.front(), median_prefill = prefills[prefills.size() / 2];
    const double gflops = 2.0 * n_prompt * c.hidden_size * c.intermediate_size / best_mm / 1e9;
    int64_t params = int64_t{c.vocab_size} * c.hidden_size;
    params +=
        int64_t{c.num_layers} *
        (2 * c.hidden_size + c.hidden_size * c.num_heads * c.head_dim * 2 +
         c.hidden_size * c.num_kv_heads * c.head_dim * 2 + 3 * c.hidden_size * c.intermediate_size);
    std::printf("%-28s %7.2fM %6s %14.0f %14.0f %14.1f %12.1f\n", std::string(dir).c_str(),
                params / 1e6, ro.dtype.c_str(), n_prompt / best_prefill, n_prompt / median_prefill,
                n_decode / best_decode, gflops);
    const double files = WeightFileBytes(std::string(dir));
    std::printf(
        "  memory: weights %.0f MB in files; RSS %.0f MB after load, %.0f MB after the runs "
        "(%.2fx the files; peak of the process %.0f MB)\n",
        files / 1e6, (rss_loaded - rss_before) / 1e6, (ProcBytes("VmRSS") - rss_before) / 1e6,
        (ProcBytes("VmRSS") - rss_before) / files, ProcBytes("VmHWM") / 1e6);
    if (absl::GetFlag(FLAGS_estimate_steps) > 0) {
      TimeEstimate(**model, tokens, absl::GetFlag(FLAGS_estimate_steps),
                   absl::GetFlag(FLAGS_repeats), best_prefill);
    }
  }
  return 0;
}

}  // namespace

// libtorch reports some failures (out of memory, a bad shape) by throwing.
int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvstream-model-bench: %s\n", e.what());
    return 1;
  }
}
