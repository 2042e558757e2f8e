// Sessions whose Transfer stream broke before Commit, kept for a window so that the
// sender can reattach (SessionOpen.resume) and send only what the cloud has not applied.
// A parked session keeps what it holds (its session slot, cache bytes and tenant quota,
// all owned by the state): they go back with the state when the window expires or when
// live work needs them (EvictOldest), or travel with it to the stream that takes it back.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace kvstream::cloud {

template <typename T>
class ParkedSessions {
 public:
  using Clock = std::chrono::steady_clock;

  // `window_seconds` <= 0 disables parking. `on_change(parked)` runs after every change,
  // e.g. to set a gauge.
  explicit ParkedSessions(double window_seconds, std::function<void(size_t)> on_change = nullptr)
      : window_(std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(std::max(0.0, window_seconds)))),
        on_change_(std::move(on_change)) {
    if (enabled()) reaper_ = std::thread([this] { Reap(); });
  }
  ~ParkedSessions() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (reaper_.joinable()) reaper_.join();
  }
  ParkedSessions(const ParkedSessions&) = delete;
  ParkedSessions& operator=(const ParkedSessions&) = delete;

  bool enabled() const { return window_.count() > 0; }
  double window_seconds() const { return std::chrono::duration<double>(window_).count(); }

  // Session `id` is receiving chunks on a stream (until Commit or a break): a resume that
  // arrives before that stream notices its break waits for it to park.
  void BeginReceiving(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    receiving_.insert(id);
  }
  void EndReceiving(const std::string& id) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      receiving_.erase(id);
    }
    cv_.notify_all();
  }

  // Keeps `state` under `id` for the window (and ends its receiving); a state parked
  // earlier under `id` is dropped.
  void Park(const std::string& id, const std::string& tenant, std::unique_ptr<T> state) {
    std::unique_ptr<T> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      receiving_.erase(id);
      Entry& e = parked_[id];
      dropped = std::move(e.state);
      e = Entry{tenant, std::move(state), Clock::now() + window_};
      Changed();
    }
    cv_.notify_all();
  }

  // Takes session `id` back for `tenant` once `check(state)` passes (a failing check
  // leaves it parked and is returned). A stream still receiving may not have noticed its
  // break yet, so this waits up to `wait` for it to park. NOT_FOUND when no such session
  // is parked: never opened, committed, expired, taken already, or another tenant's.
  absl::StatusOr<std::unique_ptr<T>> Take(const std::string& id, const std::string& tenant,
                                          Clock::duration wait,
                                          const std::function<absl::Status(const T&)>& check) {
    std::unique_lock<std::mutex> lock(mu_);
    auto found = [&] {
      auto it = parked_.find(id);
      return it != parked_.end() && it->second.tenant == tenant ? it : parked_.end();
    };
    cv_.wait_until(lock, Clock::now() + wait,
                   [&] { return stop_ || found() != parked_.end() || receiving_.count(id) == 0; });
    auto it = found();
    if (it == parked_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "no session '", id, "' to resume: it is not held here (never opened on this cloud, ",
          "already resumed, or its ", window_seconds(),
          " s --resume_window_seconds ran out); send it again from the start"));
    }
    if (check) {
      if (absl::Status st = check(*it->second.state); !st.ok()) return st;
    }
    std::unique_ptr<T> state = std::move(it->second.state);
    parked_.erase(it);
    Changed();
    return state;
  }

  // Drops the oldest parked session (of `tenant` when not null) so live work can have
  // what it held; false when there is none.
  bool EvictOldest(const std::string* tenant) {
    std::unique_ptr<T> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto oldest = parked_.end();
      for (auto it = parked_.begin(); it != parked_.end(); ++it) {
        if (tenant != nullptr && it->second.tenant != *tenant) continue;
        if (oldest == parked_.end() || it->second.expires < oldest->second.expires) oldest = it;
      }
      if (oldest == parked_.end()) return false;
      dropped = std::move(oldest->second.state);
      parked_.erase(oldest);
      Changed();
    }
    return true;  // `dropped` frees what it held here, outside the lock
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return parked_.size();
  }

 private:
  struct Entry {
    std::string tenant;
    std::unique_ptr<T> state;
    Clock::time_point expires;
  };

  void Changed() {
    if (on_change_) on_change_(parked_.size());
  }

  // Drops sessions whose window ran out; their states are destroyed outside the lock.
  void Reap() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      std::vector<std::unique_ptr<T>> expired;
      Clock::time_point next = Clock::time_point::max();
      const Clock::time_point now = Clock::now();
      for (auto it = parked_.begin(); it != parked_.end();) {
        if (it->second.expires <= now) {
          expired.push_back(std::move(it->second.state));
          it = parked_.erase(it);
        } else {
          next = std::min(next, it->second.expires);
          ++it;
        }
      }
      if (!expired.empty()) {
        Changed();
        lock.unlock();
        expired.clear();
        lock.lock();
        continue;
      }
      if (next == Clock::time_point::max()) {
        cv_.wait(lock);
      } else {
        cv_.wait_until(lock, next);
      }
    }
  }

  const Clock::duration window_;
  std::function<void(size_t)> on_change_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Entry> parked_;
  std::set<std::string> receiving_;
  bool stop_ = false;
  std::thread reaper_;
};

}  // namespace kvstream::cloud
