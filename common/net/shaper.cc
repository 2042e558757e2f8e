#include "common/net/shaper.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace kvstream::net {

LinkTrace LinkTrace::Constant(double mbps) {
  LinkTrace t;
  t.times_ = {0};
  t.mbps_ = {mbps};
  return t;
}

absl::StatusOr<LinkTrace> LinkTrace::Parse(absl::string_view text, absl::string_view source) {
  LinkTrace t;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    double s = 0, r = 0;
    if (f.size() != 2 || !absl::SimpleAtod(f[0], &s) || !absl::SimpleAtod(f[1], &r) ||
        !std::isfinite(s) || !std::isfinite(r)) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ":", line_no, ": expected \"seconds Mbit/s\", found \"", line, "\""));
    }
    if (r < 0)
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_no, ": negative rate ", r));
    if (!t.times_.empty() && s <= t.times_.back()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ":", line_no, ": time ", s, " does not increase (after ", t.times_.back(), ")"));
    }
    t.times_.push_back(s);
    t.mbps_.push_back(r);
  }
  if (t.times_.empty())
    return absl::InvalidArgumentError(absl::StrCat(source, ": no \"seconds Mbit/s\" lines"));
  // Shift to start at 0; the last rate holds for the mean step, then the trace repeats.
  const double t0 = t.times_[0];
  for (double& x : t.times_) x -= t0;
  if (t.times_.size() > 1) {
    t.period_ = t.times_.back() + t.times_.back() / static_cast<double>(t.times_.size() - 1);
  }
  return t;
}

absl::StatusOr<LinkTrace> LinkTrace::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read trace file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

double LinkTrace::RateAt(double t) const {
  if (times_.size() == 1) return mbps_[0];
  t = std::fmod(std::max(0.0, t), period_);
  const size_t i =
      static_cast<size_t>(std::upper_bound(times_.begin(), times_.end(), t) - times_.begin()) - 1;
  return mbps_[i];
}

double LinkTrace::TransmitEnd(double start, uint64_t bytes) const {
  double bits = 8.0 * static_cast<double>(bytes);
  if (times_.size() == 1) {
    return mbps_[0] > 0 ? start + bits / (mbps_[0] * 1e6) : std::numeric_limits<double>::infinity();
  }
  if (*std::max_element(mbps_.begin(), mbps_.end()) <= 0)
    return std::numeric_limits<double>::infinity();
  double t = start;
  while (bits > 0) {
    const double base = std::floor(t / period_) * period_;
    const double local = t - base;
    const size_t i = static_cast<size_t>(std::upper_bound(times_.begin(), times_.end(), local) -
                                         times_.begin()) -
                     1;
    const double seg_end = base + (i + 1 < times_.size() ? times_[i + 1] : period_);
    const double rate = mbps_[i] * 1e6;
    const double capacity = rate * (seg_end - t);
    if (rate > 0 && capacity >= bits) return t + bits / rate;
    bits -= capacity;
    t = seg_end;
  }
  return t;
}

Shaper::Shaper(LinkTrace trace, double one_way_delay_seconds, Clock clock, Sleep sleep)
    : trace_(std::move(trace)),
      delay_(one_way_delay_seconds),
      clock_(std::move(clock)),
      sleep_(std::move(sleep)) {
  if (!clock_) {
    clock_ = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
    };
  }
  if (!sleep_) {
    sleep_ = [](double s) {
      if (s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(s));
    };
  }
  start_ = clock_();
}

double Shaper::Transmit(uint64_t bytes) {
  double wait;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const double now = clock_() - start_;
    const double begin = std::max(now, link_free_);
    link_free_ = trace_.TransmitEnd(begin, bytes);
    wait = link_free_ - now;
  }
  sleep_(wait);
  return wait;
}

void Shaper::Delay() { sleep_(delay_); }

}  // namespace kvstream::net
