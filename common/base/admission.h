// Admission control for model work: a fixed number of worker slots and a bounded FIFO
// queue in front of them.
//
// A daemon runs each request's model work (prefill, selection, encode; rebuild and
// generation in the cloud) while holding a Slot. At most `workers` slots are held at
// once, so at most `workers` forward passes share the cores (each with cores / workers
// torch threads); up to `max_queued` more requests wait in arrival order; beyond that a
// request is refused at once with RESOURCE_EXHAUSTED instead of adding to a backlog
// that no client will wait for. A queued request leaves the queue when its deadline
// passes (DEADLINE_EXCEEDED), when its caller says it is gone (the `alive` check, e.g.
// a cancelled gRPC call), or when the daemon drains (Close(): UNAVAILABLE).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

#include "absl/status/statusor.h"

namespace kvstream::base {

class AdmissionGate {
 public:
  struct Options {
    int workers = 1;     // slots held at once, >= 1
    int max_queued = 0;  // requests waiting for a slot, >= 0
    // How often a queued request re-checks `alive` (cancellation is polled).
    std::chrono::milliseconds poll{20};
  };
  // Called under the gate's lock after every change: slots held and requests queued.
  using Observer = std::function<void(int running, int queued)>;

  // A held worker slot; gives it back (to the next queued request, if any) when
  // destroyed or Release()d.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept;
    Slot& operator=(Slot&& other) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot();

    void Release();
    bool held() const { return gate_ != nullptr; }
    double wait_seconds() const { return wait_seconds_; }  // time spent queued

   private:
    friend class AdmissionGate;
    Slot(AdmissionGate* gate, double wait_seconds) : gate_(gate), wait_seconds_(wait_seconds) {}
    AdmissionGate* gate_ = nullptr;
    double wait_seconds_ = 0;
  };

  explicit AdmissionGate(const Options& options, Observer observer = nullptr);
  ~AdmissionGate();
  AdmissionGate(const AdmissionGate&) = delete;
  AdmissionGate& operator=(const AdmissionGate&) = delete;

  // Takes a slot, waiting in FIFO order until `deadline`. `alive` (may be null) is
  // polled while queued; a non-OK status from it leaves the queue with that status.
  absl::StatusOr<Slot> Acquire(std::chrono::system_clock::time_point deadline,
                               const std::function<absl::Status()>& alive = nullptr);

  // Refuses every queued and later Acquire with UNAVAILABLE (drain); held slots stay.
  void Close();

  int workers() const { return options_.workers; }
  int max_queued() const { return options_.max_queued; }
  int running() const;
  int queued() const;

 private:
  struct Waiter {
    bool granted = false;
  };
  void Give();  // a slot came back: hand it to the queue's head or free it
  void Leave(Waiter* w);
  void Notify();

  const Options options_;
  const Observer observer_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Waiter*> queue_;
  int running_ = 0;
  bool closed_ = false;
};

// Default split of `cores` between model workers and torch threads per worker: about
// sqrt(cores) workers (1 on 2-3 cores, 2 on 4-8, 4 on 16), each with cores / workers
// threads, so workers x threads <= cores and one request alone still uses several cores.
struct WorkerSplit {
  int workers = 1;
  int threads = 1;
};
WorkerSplit DefaultWorkerSplit(int cores);

}  // namespace kvstream::base
