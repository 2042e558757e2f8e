// Admission control for cloud sessions: at most `max_sessions` open at once, and the
// sum of their reserved cache bytes within `budget_bytes`. A session holds a Lease for
// exactly as long as its Transfer stream runs; the lease's destructor gives the
// reservation back, so every way out of a stream (done, error, cancel, deadline,
// disconnect) frees it.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"

namespace kvstream::cloud {

class SessionStore;

class Lease {
 public:
  Lease() = default;
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();
  const std::string& id() const { return id_; }
  uint64_t bytes() const { return bytes_; }

 private:
  friend class SessionStore;
  Lease(SessionStore* store, std::string id, uint64_t bytes)
      : store_(store), id_(std::move(id)), bytes_(bytes) {}
  void Release();
  SessionStore* store_ = nullptr;
  std::string id_;
  uint64_t bytes_ = 0;
};

class SessionStore {
 public:
  // `on_change(active_sessions, bytes_in_use)` runs (under the store's lock) after every
  // acquire and release, e.g. to set gauges.
  SessionStore(uint32_t max_sessions, uint64_t budget_bytes,
               std::function<void(uint32_t, uint64_t)> on_change = nullptr);
  // RESOURCE_EXHAUSTED when the session count or the byte budget would be exceeded,
  // ALREADY_EXISTS when `id` is open, INVALID_ARGUMENT when `id` is empty.
  absl::StatusOr<Lease> Acquire(const std::string& id, uint64_t bytes);
  uint32_t active() const;
  uint64_t bytes_in_use() const;
  uint32_t max_sessions() const { return max_sessions_; }
  uint64_t budget_bytes() const { return budget_bytes_; }

 private:
  friend class Lease;
  void Release(const std::string& id, uint64_t bytes);
  const uint32_t max_sessions_;
  const uint64_t budget_bytes_;
  std::function<void(uint32_t, uint64_t)> on_change_;
  mutable std::mutex mu_;
  std::set<std::string> open_;
  uint64_t bytes_ = 0;
};

}  // namespace kvstream::cloud
