#include "common/net/peer_limit.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace kvstream::net {

PeerLimiter::Hold& PeerLimiter::Hold::operator=(Hold&& o) noexcept {
  if (this != &o) {
    if (limiter_ != nullptr) limiter_->Release(host_);
    limiter_ = o.limiter_;
    host_ = std::move(o.host_);
    o.limiter_ = nullptr;
  }
  return *this;
}

PeerLimiter::Hold::~Hold() {
  if (limiter_ != nullptr) limiter_->Release(host_);
}

PeerLimiter::PeerLimiter(int max_per_peer, std::string flag)
    : max_(max_per_peer), flag_(std::move(flag)) {}

std::string PeerLimiter::Host(absl::string_view peer) {
  for (absl::string_view scheme : {"ipv4:", "ipv6:"}) {
    if (!absl::ConsumePrefix(&peer, scheme)) continue;
    const size_t colon = peer.rfind(':');
    if (colon != absl::string_view::npos) peer = peer.substr(0, colon);
    absl::ConsumePrefix(&peer, "[");
    absl::ConsumeSuffix(&peer, "]");
    break;
  }
  return std::string(peer);
}

absl::StatusOr<PeerLimiter::Hold> PeerLimiter::Acquire(absl::string_view peer) {
  std::string host = Host(peer);
  if (max_ <= 0) return Hold();
  std::lock_guard<std::mutex> lock(mu_);
  int& n = open_[host];
  if (n >= max_) {
    return absl::ResourceExhaustedError(absl::StrCat("client ", host, " already has ", n,
                                                     " calls open; the limit per client is ", max_,
                                                     " (", flag_, ")"));
  }
  ++n;
  return Hold(this, std::move(host));
}

int PeerLimiter::open(absl::string_view peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(Host(peer));
  return it == open_.end() ? 0 : it->second;
}

void PeerLimiter::Release(const std::string& host) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(host);
  if (it != open_.end() && --it->second <= 0) open_.erase(it);
}

}  // namespace kvstream::net
