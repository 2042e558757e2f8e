#include "common/model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"

namespace kvstream::model {

int32_t GreedyToken(absl::Span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

double GreedyProbability(absl::Span<const float> logits) {
  const double top = logits[GreedyToken(logits)];
  double z = 0;
  for (float x : logits) z += std::exp(static_cast<double>(x) - top);
  return 1 / z;
}

int32_t PickToken(absl::Span<const float> logits, const SamplingOptions& o, uint64_t* rng_state) {
  if (o.temperature <= 0.0) return GreedyToken(logits);
  // Softmax at temperature, then keep the smallest set of tokens whose mass reaches top_p.
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<std::pair<double, int32_t>> probs(logits.size());
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double p = std::exp((logits[i] - max_logit) / o.temperature);
    probs[i] = {p, static_cast<int32_t>(i)};
    total += p;
  }
  std::sort(probs.begin(), probs.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  double kept = 0;
  size_t n = 0;
  while (n < probs.size() && (n == 0 || kept < o.top_p * total)) kept += probs[n++].first;
  std::mt19937_64 rng(*rng_state);
  *rng_state = rng();
  const double u = std::uniform_real_distribution<double>(0.0, kept)(rng);
  double acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += probs[i].first;
    if (u < acc) return probs[i].second;
  }
  return probs[n - 1].second;
}

absl::StatusOr<Generation> Generate(
    Model& model, KvCache& cache, int32_t last_prompt_token, const SamplingOptions& o,
    const std::function<bool(int32_t)>& on_token,
    const std::function<bool(absl::Span<const float>)>& accept_first) {
  if (o.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 1, found ", o.max_new_tokens));
  }
  if (o.temperature < 0 || !(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "temperature must be >= 0 and top_p in (0, 1], found ", o.temperature, ", ", o.top_p));
  }
  Generation g;
  uint64_t rng_state = o.seed;
  int32_t token = last_prompt_token;
  for (;;) {
    const int32_t pos = cache.next_position();
    ASSIGN_OR_RETURN(std::vector<float> logits, model.Extend(cache, {token}, {pos}));
    if (g.tokens.empty() && accept_first && !accept_first(logits)) {
      g.stop_reason = "rejected";
      break;
    }
    token = PickToken(logits, o, &rng_state);
    if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), token) != o.stop_tokens.end()) {
      g.stop_reason = "stop_token";
      break;
    }
    g.tokens.push_back(token);
    if (on_token && !on_token(token)) {
      g.stop_reason = "cancelled";
      break;
    }
    if (static_cast<int>(g.tokens.size()) >= o.max_new_tokens) {
      g.stop_reason = "max_tokens";
      break;
    }
  }
  return g;
}

}  // namespace kvstream::model
