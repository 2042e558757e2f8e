// Per-tenant quotas: the sessions (cloud) or requests (edge) each tenant holds open and
// the cache bytes they reserve, against the tenant's max_sessions / max_cache_bytes from
// the token file (Tenant). A daemon's own limits still apply on top.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "common/net/auth.h"

namespace kvstream::net {

class TenantLedger {
 public:
  // `what`: the noun for what a Hold stands for in messages ("sessions", "requests").
  explicit TenantLedger(std::string what = "sessions") : what_(std::move(what)) {}

  // One session's share of its tenant's quotas; released when destroyed.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& o) noexcept;
    Hold& operator=(Hold&& o) noexcept;
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold();

   private:
    friend class TenantLedger;
    Hold(TenantLedger* ledger, std::string tenant, uint64_t bytes)
        : ledger_(ledger), tenant_(std::move(tenant)), bytes_(bytes) {}
    TenantLedger* ledger_ = nullptr;
    std::string tenant_;
    uint64_t bytes_ = 0;
  };

  // One more session (request) of `bytes` for `tenant`, or RESOURCE_EXHAUSTED naming the
  // quota it would exceed.
  absl::StatusOr<Hold> Acquire(const Tenant& tenant, uint64_t bytes);
  uint32_t sessions(const std::string& tenant) const;
  uint64_t bytes(const std::string& tenant) const;

 private:
  struct Usage {
    uint32_t sessions = 0;
    uint64_t bytes = 0;
  };
  void Release(const std::string& tenant, uint64_t bytes);
  const std::string what_;
  mutable std::mutex mu_;
  std::map<std::string, Usage> usage_;
};

}  // namespace kvstream::net
