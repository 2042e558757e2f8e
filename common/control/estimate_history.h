// What the per-request quality estimate has said lately about each operating point. The
// quality table is a prior measured offline on some task kinds; the estimate is evidence
// about the requests actually arriving. A point the estimate keeps rejecting (a selection
// that drops the second record multi-hop questions need, on a table measured on
// single-hop ones) costs every request that chooses it a wasted prefill, estimate and
// often a stream, before the controller chooses again. So the edge keeps, per point, the
// recent share of its estimates that rejected it and prices the point's quality down by
// that share; the share decays with every adaptive request, so a point set aside is tried
// again later and the table's value returns when the requests change. A rejection counts
// whatever its reason: a plan that changed the scout's answer, or a kv plan whose scout
// was unsure of its answer (the confidence gate); either way, choosing the point first
// cost the request a detour.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/control/controller.h"

namespace kvstream::control {

class EstimateHistory {
 public:
  // `weight`: how far one verdict moves a point's share (0-1); `decay`: the share each
  // adaptive request takes off every point's (0-1).
  EstimateHistory(double weight = 0.5, double decay = 0.1);

  // One adaptive request began choosing: every share decays. Returns every point that
  // had a share with its new one (0 for a point forgotten), for metrics.
  std::map<std::string, double> Tick();
  // The estimate's verdict on the point labelled `label` (OperatingPoint::label()).
  void Observe(const std::string& label, bool rejected);
  // The recent share of estimates that rejected `label` (0 for a point never estimated).
  double RejectionShare(const std::string& label) const;
  // `points` with each quality (and each band's) scaled by 1 - its rejection share.
  std::vector<OperatingPoint> Discount(std::vector<OperatingPoint> points) const;

 private:
  const double weight_, decay_;
  mutable std::mutex mu_;
  std::map<std::string, double> share_;
};

}  // namespace kvstream::control
