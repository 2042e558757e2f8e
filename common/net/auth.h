// Bearer-token authentication for both daemons' gRPC services. A client sends
// "authorization: Bearer TOKEN" metadata; the daemon holds a file of the SHA-256 hashes of
// the tokens it accepts, one per line with the tenant it names:
//
//   # TENANT  SHA256(TOKEN) as 64 hex digits  [RIGHTS AND QUOTAS]
//   edge-berlin 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//   edge-lab    60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752 ...
//       ... models=large max_sessions=4 max_cache_bytes=268435456   (all on one line)
//
// `models=` lists the served models the tenant may use (absent:
// all); `max_sessions=` and `max_cache_bytes=` cap its concurrent sessions and the cache
// bytes they reserve (absent: no cap beyond the daemon's own). The cloud enforces them:
// PERMISSION_DENIED for a model outside the list, RESOURCE_EXHAUSTED over a quota.
//
// (`printf %s TOKEN | sha256sum` gives the hash). Tokens never sit on the server's disk
// or in its logs, each presented token is compared with every hash in constant time,
// and the file is re-read on SIGHUP (a bad file keeps the tokens already loaded).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::net {

// SHA-256 of `data` as 64 lowercase hex digits.
std::string Sha256Hex(absl::string_view data);

// Who a token belongs to and what it may do.
struct Tenant {
  std::string name;
  std::vector<std::string> models;  // served models it may use; empty: all
  uint32_t max_sessions = 0;        // concurrent sessions; 0: no quota
  uint64_t max_cache_bytes = 0;     // cache bytes its sessions reserve; 0: no quota
  bool MayUse(const std::string& model) const;
};

class TokenAuthenticator {
 public:
  // Reads `path`; INVALID_ARGUMENT naming the line for a malformed one, NOT_FOUND when
  // unreadable. An empty file accepts nobody.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Load(const std::string& path);
  // The same from the file's text; `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> FromText(absl::string_view text,
                                                                      const std::string& source);
  // Re-reads the file; on error the previous tokens stay and the error is returned.
  absl::Status Reload();
  // The tenant whose token the call carries, or UNAUTHENTICATED saying what was missing
  // or wrong (never quoting the token).
  absl::StatusOr<Tenant> Check(const grpc::ServerContext& context) const;
  // The tenant `token` belongs to, or UNAUTHENTICATED.
  absl::StatusOr<Tenant> Lookup(absl::string_view token) const;
  size_t size() const;
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    Tenant tenant;
    std::string hash;  // 32 raw bytes
  };
  static absl::StatusOr<std::vector<Entry>> Parse(absl::string_view text,
                                                  const std::string& source);
  std::string path_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
};

// Client side: the token in `path` (surrounding whitespace dropped); errors name the file.
absl::StatusOr<std::string> ReadBearerToken(const std::string& path);
// Adds "authorization: Bearer TOKEN" to `context` when `token` is not empty.
void AddBearer(grpc::ClientContext& context, const std::string& token);

}  // namespace kvstream::net
