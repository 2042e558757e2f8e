#include "cloud/session_store.h"

#include "absl/strings/str_cat.h"

namespace kvstream::cloud {

Lease::Lease(Lease&& other) noexcept
    : store_(other.store_), id_(std::move(other.id_)), bytes_(other.bytes_) {
  other.store_ = nullptr;
}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    store_ = other.store_;
    id_ = std::move(other.id_);
    bytes_ = other.bytes_;
    other.store_ = nullptr;
  }
  return *this;
}

Lease::~Lease() { Release(); }

void Lease::Release() {
  if (store_ != nullptr) store_->Release(id_, bytes_);
  store_ = nullptr;
}

SessionStore::SessionStore(uint32_t max_sessions, uint64_t budget_bytes,
                           std::function<void(uint32_t, uint64_t)> on_change)
    : max_sessions_(max_sessions), budget_bytes_(budget_bytes), on_change_(std::move(on_change)) {}

absl::StatusOr<Lease> SessionStore::Acquire(const std::string& id, uint64_t bytes) {
  if (id.empty())
    return absl::InvalidArgumentError("session_id is empty; expected a unique id per session");
  std::lock_guard<std::mutex> lock(mu_);
  if (open_.count(id))
    return absl::AlreadyExistsError(absl::StrCat("session '", id, "' is already open"));
  if (open_.size() >= max_sessions_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cloud is at its session limit: ", open_.size(),
                     " of --max_sessions=", max_sessions_, " open; retry later"));
  }
  if (bytes > budget_bytes_ - std::min(bytes_, budget_bytes_)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("session needs ", bytes, " cache bytes but only ", budget_bytes_ - bytes_,
                     " of --cache_budget_bytes=", budget_bytes_, " are free (", open_.size(),
                     " sessions open)"));
  }
  open_.insert(id);
  bytes_ += bytes;
  if (on_change_) on_change_(static_cast<uint32_t>(open_.size()), bytes_);
  return Lease(this, id, bytes);
}

void SessionStore::Release(const std::string& id, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (open_.erase(id) == 0) return;
  bytes_ -= bytes;
  if (on_change_) on_change_(static_cast<uint32_t>(open_.size()), bytes_);
}

uint32_t SessionStore::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<uint32_t>(open_.size());
}

uint64_t SessionStore::bytes_in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

}  // namespace kvstream::cloud
