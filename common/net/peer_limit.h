// A cap on concurrent calls per client address, so that one client cannot take every
// model worker, queue slot or session of a daemon by opening streams. The address is
// the peer's host with its port stripped (a client reconnecting from a new port is the
// same client); gRPC's per-connection stream limit alone does not stop a client that
// opens many connections.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::net {

class PeerLimiter {
 public:
  // One call held open; releases its place when destroyed.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& o) noexcept : limiter_(o.limiter_), host_(std::move(o.host_)) {
      o.limiter_ = nullptr;
    }
    Hold& operator=(Hold&& o) noexcept;
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold();

   private:
    friend class PeerLimiter;
    Hold(PeerLimiter* limiter, std::string host) : limiter_(limiter), host_(std::move(host)) {}
    PeerLimiter* limiter_ = nullptr;
    std::string host_;
  };

  // `flag` names the setting in messages ("--max_streams_per_peer"); <= 0: no cap.
  PeerLimiter(int max_per_peer, std::string flag);

  // A place for one more call from `peer` (grpc::ServerContext::peer(): "ipv4:1.2.3.4:5",
  // "ipv6:[::1]:5", "unix:/path"), or RESOURCE_EXHAUSTED when it has max_per_peer open.
  absl::StatusOr<Hold> Acquire(absl::string_view peer);
  // Calls open from `peer`'s host now.
  int open(absl::string_view peer) const;

  // "ipv4:1.2.3.4:5" -> "1.2.3.4", "ipv6:[::1]:5" -> "::1"; anything else as it is.
  static std::string Host(absl::string_view peer);

 private:
  void Release(const std::string& host);

  const int max_;
  const std::string flag_;
  mutable std::mutex mu_;
  std::map<std::string, int> open_;
};

}  // namespace kvstream::net
