// The decode loop. Generation from a cache starts by feeding the prompt's last token
// through it (the cache holds every earlier prompt position, possibly compacted), so
// whatever was done to the cache is felt by the very first answer token.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/model/model.h"

namespace kvstream::model {

struct SamplingOptions {
  int max_new_tokens = 32;
  double temperature = 0.0;  // 0: greedy (ties to the lowest id)
  double top_p = 1.0;        // nucleus sampling when temperature > 0
  uint64_t seed = 0;
  std::vector<int32_t> stop_tokens;  // not emitted
};

struct Generation {
  std::vector<int32_t> tokens;
  std::string stop_reason;  // "stop_token", "max_tokens", "cancelled" or "rejected"
};

// The greedy choice from logits [vocab]: the highest, ties to the lowest id.
int32_t GreedyToken(absl::Span<const float> logits);
// The softmax probability of that token.
double GreedyProbability(absl::Span<const float> logits);

// Picks the next token from logits [vocab] (greedy or sampled with `rng_state`).
int32_t PickToken(absl::Span<const float> logits, const SamplingOptions& options,
                  uint64_t* rng_state);

// `on_token` is called with each generated token; returning false stops generation.
// `accept_first` (may be null) is shown the first step's logits before a token is
// picked; returning false ends the generation there, with no token and stop_reason
// "rejected" (an answer check that failed).
absl::StatusOr<Generation> Generate(
    Model& model, KvCache& cache, int32_t last_prompt_token, const SamplingOptions& options,
    const std::function<bool(int32_t)>& on_token = nullptr,
    const std::function<bool(absl::Span<const float>)>& accept_first = nullptr);

}  // namespace kvstream::model
