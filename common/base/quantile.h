// Quantiles of a sample, for benchmarks and reports.
#pragma once

#include <algorithm>
#include <vector>

namespace kvstream::base {

// The q-quantile (0 <= q <= 1) with linear interpolation between the closest ranks (as
// numpy's default); 0 for an empty sample.
inline double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  return i + 1 < v.size() ? v[i] + (pos - static_cast<double>(i)) * (v[i + 1] - v[i]) : v[i];
}

// The median: the middle value, or the mean of the two middle ones.
inline double Median(std::vector<double> v) { return Quantile(std::move(v), 0.5); }

}  // namespace kvstream::base
