// Bearer-token authentication for both daemons' gRPC services. A client sends
// "authorization: Bearer TOKEN" metadata; the daemon holds a file of the SHA-256 hashes of
// the tokens it accepts, one per line with the tenant it names:
//
//   # TENANT  SHA256(TOKEN) as 64 hex digits
//   edge-berlin 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
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

class TokenAuthenticator {
 public:
  // Reads `path`; INVALID_ARGUMENT naming the line for a malformed one, NOT_FOUND when
  // unreadable. An empty file accepts nobody.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Load(const std::string& path);
  // Re-reads the file; on error the previous tokens stay and the error is returned.
  absl::Status Reload();
  // The tenant whose token the call carries, or UNAUTHENTICATED saying what was missing
  // or wrong (never quoting the token).
  absl::StatusOr<std::string> Check(const grpc::ServerContext& context) const;
  size_t size() const;
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    std::string tenant;
    std::string hash;  // 32 raw bytes
  };
  static absl::StatusOr<std::vector<Entry>> Parse(const std::string& path);
  std::string path_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
};

// Client side: the token in `path` (surrounding whitespace dropped); errors name the file.
absl::StatusOr<std::string> ReadBearerToken(const std::string& path);
// Adds "authorization: Bearer TOKEN" to `context` when `token` is not empty.
void AddBearer(grpc::ClientContext& context, const std::string& token);

}  // namespace kvstream::net
