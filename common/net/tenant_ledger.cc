#include "common/net/tenant_ledger.h"

#include "absl/strings/str_cat.h"

namespace kvstream::net {

TenantLedger::Hold::Hold(Hold&& o) noexcept
    : ledger_(o.ledger_), tenant_(std::move(o.tenant_)), bytes_(o.bytes_) {
  o.ledger_ = nullptr;
}

TenantLedger::Hold& TenantLedger::Hold::operator=(Hold&& o) noexcept {
  if (this != &o) {
    if (ledger_ != nullptr) ledger_->Release(tenant_, bytes_);
    ledger_ = o.ledger_;
    tenant_ = std::move(o.tenant_);
    bytes_ = o.bytes_;
    o.ledger_ = nullptr;
  }
  return *this;
}

TenantLedger::Hold::~Hold() {
  if (ledger_ != nullptr) ledger_->Release(tenant_, bytes_);
}

absl::StatusOr<TenantLedger::Hold> TenantLedger::Acquire(const Tenant& t, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  Usage& u = usage_[t.name];
  if (t.max_sessions > 0 && u.sessions >= t.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant '", t.name, "' holds ", u.sessions, " ", what_,
                     "; its quota is max_sessions=", t.max_sessions, " (token file)"));
  }
  if (t.max_cache_bytes > 0 && u.bytes + bytes > t.max_cache_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant '", t.name, "' holds ", u.bytes, " cache bytes and this one needs ",
                     bytes, "; its quota is max_cache_bytes=", t.max_cache_bytes, " (token file)"));
  }
  ++u.sessions;
  u.bytes += bytes;
  return Hold(this, t.name, bytes);
}

uint32_t TenantLedger::sessions(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = usage_.find(tenant);
  return it == usage_.end() ? 0 : it->second.sessions;
}

uint64_t TenantLedger::bytes(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = usage_.find(tenant);
  return it == usage_.end() ? 0 : it->second.bytes;
}

void TenantLedger::Release(const std::string& tenant, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = usage_.find(tenant);
  if (it == usage_.end()) return;
  --it->second.sessions;
  it->second.bytes -= bytes;
  if (it->second.sessions == 0) usage_.erase(it);
}

}  // namespace kvstream::net
