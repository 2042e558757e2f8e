// A per-request estimate of what a kv plan does to an answer, measured on the sender's own
// model before anything is sent. The edge holds the scout's full cache of the prompt; a
// candidate plan keeps some of its slots and codes them. The probe rebuilds the cache
// exactly as the receiver would (selection, encode, decode through the chunk path), feeds
// the prompt's last token and then the full cache's own greedy tokens (teacher forcing),
// and compares the next-token distributions with the full cache's at each step.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/codec/spec.h"
#include "common/model/model.h"

namespace kvstream::model {

struct QualityEstimate {
  double kl = 0;         // mean over steps of KL(full || plan), nats
  double agreement = 1;  // share of steps whose greedy token is the full cache's
  double p_top = 1;      // mean over steps of the plan's probability of the full cache's token
  int steps = 0;
  double seconds = 0;  // to rebuild the cache and run the steps
  // The full cache's own probability of its first greedy token: how sure the sender's
  // model is of its answer, whatever the plan (QualityProbe::confidence).
  double confidence = 1;
};

class QualityProbe {
 public:
  // The reference: a copy of `cache` (the prompt but its last token; not changed, and it
  // must outlive the probe) fed `last`, then up to `steps` - 1 of its own greedy tokens,
  // ending at the first of `stop_tokens` it predicts (what follows a stop is never sent
  // to a client, so it is not compared). `last_logits` (optional): the logits the
  // prefill already computed for `last` over the whole prompt, which saves a step.
  // The greedy tokens are found one forward pass at a time; the distributions compared
  // then come from one teacher-forced pass over all the steps, for the reference and
  // for each plan alike. The steps after the first are computed when an estimate
  // first asks for them, so a probe whose estimates take one step (with `last_logits`)
  // runs no forward pass of its own. A one-step estimate always compares with the first
  // reference computed (the prefill's logits when given), whatever came before it; a
  // longer one with the teacher-forced pass, so that a lossless plan compares exactly.
  static absl::StatusOr<std::unique_ptr<QualityProbe>> Create(
      Model& model, const KvCache& cache, int32_t last, int steps,
      const std::vector<int32_t>& stop_tokens = {},
      const std::vector<float>* last_logits = nullptr);

  // The estimate for sending `kept` slots of the cache (strictly increasing; empty: all)
  // coded under `plan`, over the first `steps` steps (at most Create's; 0: all of them).
  absl::StatusOr<QualityEstimate> Estimate(const std::vector<int32_t>& kept,
                                           const codec::Plan& plan, int steps = 0);

  // The steps an estimate of `steps` compares (fewer when the full cache's answer ends).
  absl::StatusOr<int> Steps(int steps = 0);
  // The full cache's greedy token at each step computed so far (ties to the lowest id,
  // as generation); Steps(n) computes the first n.
  const std::vector<int>& greedy() const { return top_; }
  double reference_seconds() const { return reference_seconds_; }
  // The full cache's probability of its own first greedy token.
  double confidence() const { return std::exp(first_log_probs_[first_top_]); }

 private:
  QualityProbe(Model& model, const KvCache& cache) : model_(model), cache_(cache) {}
  // Computes the reference's first step, or every step (Create's count).
  absl::Status ComputeReference(bool all_steps);
  // `last` and the full cache's greedy tokens after it, up to `steps` inputs.
  absl::StatusOr<std::vector<int32_t>> GreedyInputs(int steps);
  // Log-probabilities at each step, `inputs` fed in one pass through a copy of
  // `source`'s `slots` (or through `cache` itself, which it extends).
  absl::StatusOr<std::vector<std::vector<double>>> StepLogProbs(
      const KvCache& source, const std::vector<int32_t>& slots,
      const std::vector<int32_t>& inputs) const;
  absl::StatusOr<std::vector<std::vector<double>>> StepLogProbsOn(
      KvCache& cache, const std::vector<int32_t>& inputs) const;
  // The reference's distribution and greedy token at step `s` of an `n`-step estimate.
  const std::vector<double>& Reference(int s, int n) const;
  int Top(int s, int n) const;
  QualityEstimate Compare(const std::vector<std::vector<double>>& plan_lp, int n) const;

  Model& model_;
  const KvCache& cache_;
  int32_t last_ = 0;
  int max_steps_ = 1;  // Create's
  std::vector<int32_t> stop_tokens_;
  std::vector<float> last_logits_;  // the prefill's for `last`, or empty
  bool all_steps_ = false;          // the reference covers every step, not just the first
  std::vector<int32_t> inputs_;     // token fed at each step
  std::vector<std::vector<double>> log_probs_;  // the full cache's, per step
  std::vector<int> top_;                        // its greedy token per step
  std::vector<double> first_log_probs_;         // the first step's, as first computed
  int first_top_ = 0;
  double reference_seconds_ = 0;
};

}  // namespace kvstream::model
