#include "common/select/select.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/base/quote.h"
#include "common/base/status.h"

namespace kvstream::select {
namespace {

// Sum over layers and heads of a per-(layer, head, token) statistic, for context tokens.
std::vector<double> SumOverHeads(const AttentionStats& s, const std::vector<float>& a,
                                 const PromptSpans& spans) {
  std::vector<double> score(static_cast<size_t>(spans.context_tokens()), 0.0);
  for (int l = 0; l < s.num_layers; ++l) {
    for (int h = 0; h < s.num_heads; ++h) {
      for (int t = spans.context_begin; t < spans.context_end; ++t) {
        score[t - spans.context_begin] += s.at(a, l, h, t);
      }
    }
  }
  return score;
}

// Indices (into `score`) of the `k` highest scores among candidates, ties to the lower
// index, so the result is deterministic.
std::vector<int> TopK(const std::vector<double>& score, const std::vector<int>& candidates, int k) {
  std::vector<int> order = candidates;
  k = std::min<int>(k, static_cast<int>(order.size()));
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  });
  order.resize(static_cast<size_t>(k));
  return order;
}

absl::Status Need(const AttentionStats& s, const std::vector<float>& a, absl::string_view what,
                  Policy p) {
  if (a.size() != s.size() || a.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        PolicyName(p), " needs the ", what, " attention statistics ([", s.num_layers, " x ",
        s.num_heads, " x ", s.num_tokens, "] = ", s.size(), " values), found ", a.size()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view PolicyName(Policy p) {
  switch (p) {
    case Policy::kFull:
      return "full";
    case Policy::kQ2C:
      return "q2c";
    case Policy::kQ2CQuestion:
      return "q2c-question";
    case Policy::kSnapKV:
      return "snapkv";
    case Policy::kH2O:
      return "h2o";
    case Policy::kRandom:
      return "random";
  }
  return "?";
}

absl::StatusOr<Policy> ParsePolicy(absl::string_view name) {
  for (Policy p : {Policy::kFull, Policy::kQ2C, Policy::kQ2CQuestion, Policy::kSnapKV, Policy::kH2O,
                   Policy::kRandom}) {
    if (name == PolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("selector: expected one of full, q2c, q2c-question, snapkv, h2o, random; found ",
                   base::Quote(name)));
}

int ContextBudget(double retention, int context_tokens) {
  const long k = std::lround(retention * context_tokens);
  return static_cast<int>(std::clamp<long>(k, 0, context_tokens));
}

namespace {

absl::Status CheckSelectOptions(const PromptSpans& spans, const SelectOptions& o) {
  if (spans.context_begin < 0 || spans.context_end < spans.context_begin ||
      spans.context_end > spans.num_tokens || spans.question_begin < 0 ||
      spans.question_end < spans.question_begin || spans.question_end > spans.num_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("spans: context [", spans.context_begin, ", ", spans.context_end,
                     ") and question [", spans.question_begin, ", ", spans.question_end,
                     ") must lie within ", spans.num_tokens, " tokens"));
  }
  if (!(o.retention >= 0.0 && o.retention <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("retention must be in [0, 1], found ", o.retention));
  }
  if (o.sink_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sink tokens must be >= 0, found ", o.sink_tokens));
  }
  return absl::OkStatus();
}

// Question-to-context attention: score(t) = sum over layers l, heads h and queries q of
// softmax(Q_q K^T / sqrt(d))[t], q over the question and every later row (q2c) or over
// the question alone (q2c-question, the research report's definition).
absl::StatusOr<std::vector<int>> SelectQ2C(const AttentionStats& stats, const PromptSpans& spans,
                                           Policy policy, const std::vector<int>& candidates,
                                           int k) {
  if (spans.question_end == spans.question_begin) {
    return absl::InvalidArgumentError(
        absl::StrCat(PolicyName(policy), " needs a non-empty question span"));
  }
  const bool tail = policy == Policy::kQ2C;
  const std::vector<float>& rows = tail ? stats.question_tail : stats.question;
  RETURN_IF_ERROR(Need(stats, rows, tail ? "question-through-last-row" : "question", policy));
  return TopK(SumOverHeads(stats, rows, spans), candidates, k);
}

// SnapKV (Li et al. 2024, "SnapKV: LLM Knows What You are Looking for Before
// Generation"): votes = attention of the last W queries (the observation window) to each
// key, smoothed by a 1-D pooling of `kernel` along the sequence, then top-k. The paper
// selects per head; here votes are pooled per (layer, head) and summed.
absl::StatusOr<std::vector<int>> SelectSnapKV(const AttentionStats& stats, const PromptSpans& spans,
                                              const SelectOptions& o,
                                              const std::vector<int>& candidates, int k) {
  RETURN_IF_ERROR(Need(stats, stats.window, "window", o.policy));
  if (o.snapkv_kernel < 1 || o.snapkv_kernel % 2 == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapkv kernel must be odd and >= 1, found ", o.snapkv_kernel));
  }
  const int n_ctx = spans.context_tokens(), half = o.snapkv_kernel / 2;
  const bool max_pool = o.snapkv_pooling == Pooling::kMax;
  std::vector<double> score(static_cast<size_t>(n_ctx), 0.0);
  std::vector<double> votes(static_cast<size_t>(n_ctx));
  for (int l = 0; l < stats.num_layers; ++l) {
    for (int h = 0; h < stats.num_heads; ++h) {
      for (int t = 0; t < n_ctx; ++t)
        votes[t] = stats.at(stats.window, l, h, spans.context_begin + t);
      for (int t = 0; t < n_ctx; ++t) {
        const int lo = std::max(0, t - half), hi = std::min(n_ctx - 1, t + half);
        double pooled = max_pool ? votes[lo] : 0.0;
        for (int j = lo; j <= hi; ++j)
          pooled = max_pool ? std::max(pooled, votes[j]) : pooled + votes[j];
        // Average pooling divides by the full kernel (zero padding), as avg_pool1d does.
        score[t] += max_pool ? pooled : pooled / o.snapkv_kernel;
      }
    }
  }
  return TopK(score, candidates, k);
}

// H2O (Zhang et al. 2023, "H2O: Heavy-Hitter Oracle"): keep the most recent tokens plus
// the heavy hitters, the tokens with the largest attention accumulated over all queries.
// The budget splits as recent = round(share * k), heavy = k - recent.
absl::StatusOr<std::vector<int>> SelectH2O(const AttentionStats& stats, const PromptSpans& spans,
                                           const SelectOptions& o,
                                           const std::vector<int>& candidates, int k) {
  RETURN_IF_ERROR(Need(stats, stats.cumulative, "cumulative", o.policy));
  const int recent = std::min(k, static_cast<int>(std::lround(o.h2o_recent_share * k)));
  const std::vector<int> rest(candidates.begin(), candidates.end() - recent);
  std::vector<int> chosen(candidates.end() - recent, candidates.end());
  const std::vector<int> heavy =
      TopK(SumOverHeads(stats, stats.cumulative, spans), rest, k - recent);
  chosen.insert(chosen.end(), heavy.begin(), heavy.end());
  return chosen;
}

// Uniform sample without replacement: a partial Fisher-Yates shuffle over a mt19937_64
// stream (both fully specified, so a seed gives the same result on any standard library).
std::vector<int> SelectRandom(std::vector<int> candidates, int k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < k; ++i) {
    const uint64_t span = candidates.size() - static_cast<size_t>(i);
    const size_t j = static_cast<size_t>(i) + static_cast<size_t>(rng() % span);
    std::swap(candidates[i], candidates[j]);
  }
  candidates.resize(static_cast<size_t>(k));
  return candidates;
}

}  // namespace

absl::StatusOr<Selection> Select(const AttentionStats& stats, const PromptSpans& spans,
                                 const SelectOptions& o) {
  RETURN_IF_ERROR(CheckSelectOptions(spans, o));
  const int n_ctx = spans.context_tokens();
  const int budget = o.policy == Policy::kFull ? n_ctx : ContextBudget(o.retention, n_ctx);
  const int sinks = std::min({o.sink_tokens, budget, n_ctx});
  // The statistics may cover the prompt's last token beyond the spans (the cache).
  if (o.policy != Policy::kFull && o.policy != Policy::kRandom && budget > sinks &&
      stats.num_tokens < spans.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("attention statistics cover ", stats.num_tokens,
                                                   " tokens, the prompt has ", spans.num_tokens));
  }
  // Context indices (0-based within the context) chosen beyond the sinks.
  std::vector<int> candidates(static_cast<size_t>(n_ctx - sinks));
  std::iota(candidates.begin(), candidates.end(), sinks);
  const int k = budget - sinks;
  std::vector<int> chosen;
  if (o.policy == Policy::kFull) {
    chosen = candidates;
  } else if (o.policy == Policy::kRandom) {
    chosen = SelectRandom(std::move(candidates), k, o.seed);
  } else if (k > 0 && (o.policy == Policy::kQ2C || o.policy == Policy::kQ2CQuestion)) {
    ASSIGN_OR_RETURN(chosen, SelectQ2C(stats, spans, o.policy, candidates, k));
  } else if (k > 0 && o.policy == Policy::kSnapKV) {
    ASSIGN_OR_RETURN(chosen, SelectSnapKV(stats, spans, o, candidates, k));
  } else if (k > 0 && o.policy == Policy::kH2O) {
    ASSIGN_OR_RETURN(chosen, SelectH2O(stats, spans, o, candidates, k));
  }
  Selection sel;
  sel.context_total = n_ctx;
  std::vector<bool> keep(static_cast<size_t>(spans.num_tokens), true);
  for (int t = spans.context_begin; t < spans.context_end; ++t) keep[t] = false;
  for (int i = 0; i < sinks; ++i) keep[spans.context_begin + i] = true;
  for (int c : chosen) keep[spans.context_begin + c] = true;
  for (int t = 0; t < spans.num_tokens; ++t) {
    if (keep[t]) sel.kept.push_back(t);
    if (keep[t] && (t < spans.context_begin || t >= spans.context_end)) sel.ranked.push_back(t);
  }
  for (int i = 0; i < sinks; ++i) sel.ranked.push_back(spans.context_begin + i);
  sel.always_kept = static_cast<int>(sel.ranked.size());
  for (int c : chosen) sel.ranked.push_back(spans.context_begin + c);
  sel.context_kept = sinks + static_cast<int>(chosen.size());
  return sel;
}

Selection KeepAll(const PromptSpans& spans) {
  Selection all;
  all.kept.resize(static_cast<size_t>(spans.num_tokens));
  std::iota(all.kept.begin(), all.kept.end(), 0);
  for (int t = 0; t < spans.num_tokens; ++t) {
    if (t < spans.context_begin || t >= spans.context_end) all.ranked.push_back(t);
  }
  all.always_kept = static_cast<int>(all.ranked.size());
  for (int t = spans.context_begin; t < spans.context_end; ++t) all.ranked.push_back(t);
  all.context_kept = all.context_total = spans.context_tokens();
  return all;
}

Tiers SplitTiers(const Selection& selection, int n) {
  Tiers out;
  const auto ranked = static_cast<int>(selection.ranked.size()) - selection.always_kept;
  n = std::max(1, std::min(n, ranked));
  int at = 0;
  for (int i = 0; i < n; ++i) {
    int end = selection.always_kept + ranked / n * (i + 1) + std::min(i + 1, ranked % n);
    if (i == n - 1) end = static_cast<int>(selection.ranked.size());
    std::vector<int32_t> tier(selection.ranked.begin() + at, selection.ranked.begin() + end);
    std::sort(tier.begin(), tier.end());
    out.positions.insert(out.positions.end(), tier.begin(), tier.end());
    out.sizes.push_back(static_cast<uint32_t>(tier.size()));
    at = end;
  }
  return out;
}

}  // namespace kvstream::select
