#include "common/base/admission.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvstream::base {

AdmissionGate::Slot::Slot(Slot&& other) noexcept
    : gate_(other.gate_), wait_seconds_(other.wait_seconds_) {
  other.gate_ = nullptr;
}

AdmissionGate::Slot& AdmissionGate::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    Release();
    gate_ = other.gate_;
    wait_seconds_ = other.wait_seconds_;
    other.gate_ = nullptr;
  }
  return *this;
}

AdmissionGate::Slot::~Slot() { Release(); }

void AdmissionGate::Slot::Release() {
  if (gate_ != nullptr) gate_->Give();
  gate_ = nullptr;
}

AdmissionGate::AdmissionGate(const Options& options, Observer observer)
    : options_{std::max(1, options.workers), std::max(0, options.max_queued), options.poll},
      observer_(std::move(observer)) {}

AdmissionGate::~AdmissionGate() = default;

int AdmissionGate::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

int AdmissionGate::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size());
}

void AdmissionGate::Notify() {
  if (observer_) observer_(running_, static_cast<int>(queue_.size()));
}

void AdmissionGate::Give() {
  std::lock_guard<std::mutex> lock(mu_);
  if (queue_.empty()) {
    --running_;
  } else {
    // The slot passes straight to the head of the queue: running_ is unchanged.
    queue_.front()->granted = true;
    queue_.pop_front();
    cv_.notify_all();
  }
  Notify();
}

void AdmissionGate::Leave(Waiter* w) {
  queue_.erase(std::find(queue_.begin(), queue_.end(), w));
  Notify();
}

absl::StatusOr<AdmissionGate::Slot> AdmissionGate::Acquire(
    std::chrono::system_clock::time_point deadline, const std::function<absl::Status()>& alive) {
  const auto start = std::chrono::steady_clock::now();
  auto waited = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::unique_lock<std::mutex> lock(mu_);
  if (closed_) return absl::UnavailableError("draining: no new model work is admitted");
  if (running_ < options_.workers && queue_.empty()) {
    ++running_;
    Notify();
    return Slot(this, 0);
  }
  if (static_cast<int>(queue_.size()) >= options_.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", options_.workers, " model workers are busy and ", queue_.size(),
                     " requests are queued (--max_queued=", options_.max_queued, "); retry later"));
  }
  Waiter w;
  queue_.push_back(&w);
  Notify();
  while (!w.granted) {
    absl::Status gone;
    if (closed_) {
      gone = absl::UnavailableError("draining: queued model work was refused");
    } else if (std::chrono::system_clock::now() >= deadline) {
      gone = absl::DeadlineExceededError(absl::StrFormat(
          "deadline passed after %.3f s queued for a model worker (%d busy, %d queued)", waited(),
          running_, queue_.size()));
    } else if (alive) {
      gone = alive();
    }
    if (!gone.ok()) {
      Leave(&w);
      return gone;
    }
    const auto poll_until = std::chrono::system_clock::now() + options_.poll;
    cv_.wait_until(lock, std::min(deadline, poll_until));
  }
  return Slot(this, waited());
}

void AdmissionGate::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  cv_.notify_all();
}

WorkerSplit DefaultWorkerSplit(int cores) {
  cores = std::max(1, cores);
  WorkerSplit s;
  s.workers = std::max(1, static_cast<int>(std::floor(std::sqrt(static_cast<double>(cores)))));
  s.threads = std::max(1, cores / s.workers);
  return s;
}

}  // namespace kvstream::base
