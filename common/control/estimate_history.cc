#include "common/control/estimate_history.h"

#include <algorithm>

namespace kvstream::control {

EstimateHistory::EstimateHistory(double weight, double decay)
    : weight_(std::clamp(weight, 0.0, 1.0)), decay_(std::clamp(decay, 0.0, 1.0)) {}

std::map<std::string, double> EstimateHistory::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, double> out;
  for (auto it = share_.begin(); it != share_.end();) {
    it->second *= 1 - decay_;
    // Below a thousandth the share no longer moves a choice: forget the point.
    const bool forget = it->second < 1e-3;
    out[it->first] = forget ? 0.0 : it->second;
    it = forget ? share_.erase(it) : std::next(it);
  }
  return out;
}

void EstimateHistory::Observe(const std::string& label, bool rejected) {
  std::lock_guard<std::mutex> lock(mu_);
  double& s = share_[label];
  s = (1 - weight_) * s + (rejected ? weight_ : 0.0);
}

double EstimateHistory::RejectionShare(const std::string& label) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = share_.find(label);
  return it == share_.end() ? 0.0 : it->second;
}

std::vector<OperatingPoint> EstimateHistory::Discount(std::vector<OperatingPoint> points) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (OperatingPoint& p : points) {
    auto it = share_.find(p.label());
    if (it == share_.end()) continue;
    const double keep = 1 - it->second;
    p.quality *= keep;
    for (QualityBand& b : p.bands) b.quality *= keep;
  }
  return points;
}

}  // namespace kvstream::control
