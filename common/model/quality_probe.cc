#include "common/model/quality_probe.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/model/kv_chunks.h"

namespace kvstream::model {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::vector<double> LogSoftmax(const std::vector<float>& logits) {
  const double m = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - m);
  const double log_z = m + std::log(sum);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_z;
  return out;
}

int ArgMax(const std::vector<double>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

std::vector<int32_t> AllSlots(const KvCache& cache) {
  std::vector<int32_t> slots(cache.size());
  std::iota(slots.begin(), slots.end(), 0);
  return slots;
}

}  // namespace

absl::StatusOr<std::unique_ptr<QualityProbe>> QualityProbe::Create(
    Model& model, const KvCache& cache, int32_t last, int steps,
    const std::vector<int32_t>& stop_tokens) {
  if (steps < 1 || steps > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("quality probe: expected 1 to 64 steps, found ", steps));
  }
  const auto t0 = Clock::now();
  std::unique_ptr<QualityProbe> probe(new QualityProbe(model, cache));
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> copy, cache.Copy(AllSlots(cache)));
  int32_t token = last;
  for (int s = 0; s < steps; ++s) {
    const int32_t position = copy->next_position();
    ASSIGN_OR_RETURN(std::vector<float> logits, model.Extend(*copy, {token}, {position}));
    probe->inputs_.push_back(token);
    probe->log_probs_.push_back(LogSoftmax(logits));
    probe->top_.push_back(ArgMax(probe->log_probs_.back()));
    token = probe->top_.back();
    if (std::find(stop_tokens.begin(), stop_tokens.end(), token) != stop_tokens.end()) break;
  }
  probe->reference_seconds_ = Since(t0);
  return probe;
}

absl::StatusOr<QualityEstimate> QualityProbe::Estimate(const std::vector<int32_t>& kept,
                                                       const codec::Plan& plan) {
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> sent,
                   cache_.Copy(kept.empty() ? AllSlots(cache_) : kept));
  // Through the codec and the receiver's assembler, as the cloud rebuilds it.
  ASSIGN_OR_RETURN(auto chunks, EncodeCache(*sent, plan, "estimate", {}));
  CacheAssembler assembler(model_, "estimate", sent->positions(), sent->next_position());
  for (const auto& c : chunks) RETURN_IF_ERROR(assembler.Add(c));
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> rebuilt, assembler.Finish());
  QualityEstimate e;
  e.agreement = e.p_top = 0;
  for (size_t s = 0; s < inputs_.size(); ++s) {
    const int32_t position = rebuilt->next_position();
    ASSIGN_OR_RETURN(std::vector<float> logits, model_.Extend(*rebuilt, {inputs_[s]}, {position}));
    const std::vector<double> lp = LogSoftmax(logits);
    const std::vector<double>& ref = log_probs_[s];
    double kl = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (ref[i] > -80) kl += std::exp(ref[i]) * (ref[i] - lp[i]);  // e^-80: below f32 noise
    }
    e.kl += std::max(0.0, kl);
    e.agreement += ArgMax(lp) == top_[s];
    e.p_top += std::exp(lp[top_[s]]);
  }
  e.steps = static_cast<int>(inputs_.size());
  e.kl /= e.steps;
  e.agreement /= e.steps;
  e.p_top /= e.steps;
  e.seconds = Since(t0);
  return e;
}

}  // namespace kvstream::model
