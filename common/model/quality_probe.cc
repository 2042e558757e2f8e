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
    const std::vector<int32_t>& stop_tokens, const std::vector<float>* last_logits) {
  if (steps < 1 || steps > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("quality probe: expected 1 to 64 steps, found ", steps));
  }
  const int vocab = model.config().vocab_size;
  if (last_logits != nullptr && static_cast<int>(last_logits->size()) != vocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quality probe: last logits of ", last_logits->size(), " entries; expected ", vocab));
  }
  std::unique_ptr<QualityProbe> probe(new QualityProbe(model, cache));
  probe->last_ = last;
  probe->max_steps_ = steps;
  probe->stop_tokens_ = stop_tokens;
  if (last_logits != nullptr) probe->last_logits_ = *last_logits;
  RETURN_IF_ERROR(probe->ComputeReference(/*all_steps=*/false));
  probe->first_log_probs_ = probe->log_probs_.front();
  probe->first_top_ = probe->top_.front();
  return probe;
}

absl::Status QualityProbe::ComputeReference(bool all_steps) {
  const auto t0 = Clock::now();
  const int steps = all_steps ? max_steps_ : 1;
  ASSIGN_OR_RETURN(std::vector<int32_t> inputs, GreedyInputs(steps));
  // The reference distributions come from one teacher-forced pass over those inputs, the
  // same call Estimate makes on a plan's cache. With one step and the prefill's logits,
  // those logits are the reference and no pass runs (Estimate answers a lossless plan
  // over every slot exactly, without a pass, so it still compares exactly equal).
  std::vector<std::vector<double>> log_probs;
  if (inputs.size() == 1 && !last_logits_.empty()) {
    log_probs = {LogSoftmax(last_logits_)};
  } else {
    ASSIGN_OR_RETURN(log_probs, StepLogProbs(cache_, AllSlots(cache_), inputs));
  }
  inputs_ = std::move(inputs);
  log_probs_ = std::move(log_probs);
  top_.clear();
  for (const std::vector<double>& lp : log_probs_) top_.push_back(ArgMax(lp));
  all_steps_ = all_steps || max_steps_ == 1;
  reference_seconds_ += Since(t0);
  return absl::OkStatus();
}

const std::vector<double>& QualityProbe::Reference(int s, int n) const {
  return n == 1 ? first_log_probs_ : log_probs_[s];
}

int QualityProbe::Top(int s, int n) const { return n == 1 ? first_top_ : top_[s]; }

absl::StatusOr<int> QualityProbe::Steps(int steps) {
  if (steps <= 0 || steps > max_steps_) steps = max_steps_;
  if (steps > 1 && !all_steps_) RETURN_IF_ERROR(ComputeReference(/*all_steps=*/true));
  return std::min(steps, static_cast<int>(inputs_.size()));
}

absl::StatusOr<std::vector<int32_t>> QualityProbe::GreedyInputs(int steps) {
  auto is_stop = [&](int32_t t) {
    return std::find(stop_tokens_.begin(), stop_tokens_.end(), t) != stop_tokens_.end();
  };
  std::vector<int32_t> inputs = {last_};
  std::unique_ptr<KvCache> copy;
  std::vector<int32_t> pending = {last_};  // fed on the next call
  for (int s = 0; s + 1 < steps; ++s) {
    int32_t top;
    if (s == 0 && !last_logits_.empty()) {  // the prefill already ran `last`
      top = ArgMax(LogSoftmax(last_logits_));
    } else {
      if (copy == nullptr) {
        ASSIGN_OR_RETURN(copy, cache_.Copy(AllSlots(cache_)));
      }
      std::vector<int32_t> positions(pending.size());
      std::iota(positions.begin(), positions.end(), copy->next_position());
      ASSIGN_OR_RETURN(std::vector<float> logits, model_.Extend(*copy, pending, positions));
      pending.clear();
      top = ArgMax(LogSoftmax(logits));
    }
    if (is_stop(top)) break;  // the answer ends here: nothing after it is compared
    inputs.push_back(top);
    pending.push_back(top);
  }
  return inputs;
}

absl::StatusOr<std::vector<std::vector<double>>> QualityProbe::StepLogProbs(
    const KvCache& source, const std::vector<int32_t>& slots,
    const std::vector<int32_t>& inputs) const {
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, source.Copy(slots));
  return StepLogProbsOn(*cache, inputs);
}

absl::StatusOr<std::vector<std::vector<double>>> QualityProbe::StepLogProbsOn(
    KvCache& cache, const std::vector<int32_t>& inputs) const {
  const int n = static_cast<int>(inputs.size());
  std::vector<int32_t> positions(n);
  std::iota(positions.begin(), positions.end(), cache.next_position());
  ASSIGN_OR_RETURN(std::vector<float> logits, model_.Extend(cache, inputs, positions, n));
  const size_t vocab = logits.size() / n;
  std::vector<std::vector<double>> out;
  out.reserve(n);
  for (int s = 0; s < n; ++s) {
    out.push_back(LogSoftmax(
        std::vector<float>(logits.begin() + s * vocab, logits.begin() + (s + 1) * vocab)));
  }
  return out;
}

absl::StatusOr<QualityEstimate> QualityProbe::Estimate(const std::vector<int32_t>& kept,
                                                       const codec::Plan& plan, int steps) {
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(const int n, Steps(steps));
  if (kept.empty() && plan.lossless(model_.config().num_layers)) {
    // The receiver rebuilds this cache bit for bit: the reference itself.
    QualityEstimate e;
    e.steps = n;
    e.agreement = 1;
    e.p_top = 0;
    for (int s = 0; s < n; ++s) e.p_top += std::exp(Reference(s, n)[Top(s, n)]);
    e.p_top /= n;
    e.confidence = confidence();
    e.seconds = Since(t0);
    return e;
  }
  // The kept slots (the whole cache is encoded in place), through the codec and the
  // receiver's assembler, as the cloud rebuilds them.
  std::unique_ptr<KvCache> copy;
  if (!kept.empty()) {
    ASSIGN_OR_RETURN(copy, cache_.Copy(kept));
  }
  const KvCache& sent = copy != nullptr ? *copy : cache_;
  ASSIGN_OR_RETURN(auto chunks, EncodeCache(sent, plan, "estimate", {}));
  CacheAssembler assembler(model_, "estimate", sent.positions(), sent.next_position());
  for (const auto& c : chunks) RETURN_IF_ERROR(assembler.Add(c));
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> rebuilt, assembler.Finish());
  const std::vector<int32_t> inputs(inputs_.begin(), inputs_.begin() + n);
  ASSIGN_OR_RETURN(const std::vector<std::vector<double>> plan_lp,
                   StepLogProbsOn(*rebuilt, inputs));
  QualityEstimate e = Compare(plan_lp, n);
  e.seconds = Since(t0);
  return e;
}

QualityEstimate QualityProbe::Compare(const std::vector<std::vector<double>>& plan_lp,
                                      int n) const {
  QualityEstimate e;
  e.agreement = e.p_top = 0;
  for (int s = 0; s < n; ++s) {
    const std::vector<double>& lp = plan_lp[s];
    const std::vector<double>& ref = Reference(s, n);
    double kl = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (ref[i] > -80) kl += std::exp(ref[i]) * (ref[i] - lp[i]);  // e^-80: below f32 noise
    }
    e.kl += std::max(0.0, kl);
    e.agreement += ArgMax(lp) == Top(s, n);
    e.p_top += std::exp(lp[Top(s, n)]);
  }
  e.steps = n;
  e.kl /= n;
  e.agreement /= n;
  e.p_top /= n;
  e.confidence = confidence();
  return e;
}

}  // namespace kvstream::model
