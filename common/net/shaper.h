// User-space link emulation for the edge's uplink: a serial link whose rate follows a
// constant or a bandwidth trace, plus a one-way delay. This kernel has no netem, so the
// delay lives here; rate can also come from tc in network namespaces
// (bench/netns-link.sh).
//
// Trace format (Pensieve's cooked traces): one "seconds Mbit/s" pair per line, times
// increasing; the rate holds until the next line, and the trace repeats from its start
// after the last line (whose rate holds for the mean step). Rate 0 is an outage.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::net {

class LinkTrace {
 public:
  static LinkTrace Constant(double mbps);
  // `source` names the file in errors.
  static absl::StatusOr<LinkTrace> Parse(absl::string_view text, absl::string_view source);
  static absl::StatusOr<LinkTrace> Load(const std::string& path);

  // Rate in Mbit/s at time `t` seconds from the start.
  double RateAt(double t) const;
  // When `bytes` started at time `start` finish crossing the link (seconds). Outages
  // stall; a trace that is all zeros never finishes (returns +inf).
  double TransmitEnd(double start, uint64_t bytes) const;
  double period() const { return period_; }
  bool constant() const { return times_.size() == 1; }

 private:
  std::vector<double> times_;  // segment start times, times_[0] == 0
  std::vector<double> mbps_;
  double period_ = 0;  // trace length; 0 for a constant
};

// A serial link shared by every sender in the process (the edge's one uplink): sends
// queue FIFO, each waits until its bytes have crossed at the trace's rate. The clock and
// the sleep are injectable so tests run on virtual time.
class Shaper {
 public:
  using Clock = std::function<double()>;              // seconds
  using Sleep = std::function<void(double seconds)>;  // until now() + seconds
  Shaper(LinkTrace trace, double one_way_delay_seconds, Clock clock = nullptr,
         Sleep sleep = nullptr);

  // Reserves the link for `bytes` and blocks until they have crossed it; returns the
  // seconds spent waiting (queueing + transmission).
  double Transmit(uint64_t bytes);
  // Blocks for the one-way delay (once per direction per exchange: the first uplink
  // message and the first downlink token).
  void Delay();
  double one_way_delay() const { return delay_; }
  const LinkTrace& trace() const { return trace_; }

 private:
  LinkTrace trace_;
  double delay_;
  Clock clock_;
  Sleep sleep_;
  double start_ = 0;      // clock at construction: trace time 0
  double link_free_ = 0;  // trace time at which the link is next idle
  std::mutex mu_;
};

}  // namespace kvstream::net
