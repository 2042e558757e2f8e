#include "edge/replicas.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/net/auth.h"
#include "kvstream/v1/service.grpc.pb.h"

namespace kvstream::edge {
namespace {

constexpr char kService[] = "kvstream.v1.CloudService";

// "HOST:PORT" or "[V6]:PORT" split at the last colon outside brackets.
absl::StatusOr<std::pair<std::string, std::string>> SplitHostPort(absl::string_view hp) {
  const size_t colon = hp.rfind(':');
  if (colon == absl::string_view::npos || colon + 1 == hp.size() || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected HOST:PORT in the cloud target, found '", hp, "'"));
  }
  std::string host(hp.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return std::make_pair(host, std::string(hp.substr(colon + 1)));
}

absl::StatusOr<std::vector<std::string>> Resolve(absl::string_view host_port) {
  auto hp = SplitHostPort(host_port);
  if (!hp.ok()) return hp.status();
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(hp->first.c_str(), hp->second.c_str(), &hints, &found);
  if (rc != 0) {
    return absl::NotFoundError(
        absl::StrCat("cloud target '", host_port, "' does not resolve: ", gai_strerror(rc)));
  }
  std::vector<std::string> out;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char host[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, host, sizeof(host), nullptr, 0, NI_NUMERICHOST) != 0)
      continue;
    const std::string addr = a->ai_family == AF_INET6 ? absl::StrCat("[", host, "]:", hp->second)
                                                      : absl::StrCat(host, ":", hp->second);
    if (std::find(out.begin(), out.end(), addr) == out.end()) out.push_back(addr);
  }
  freeaddrinfo(found);
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> TargetAddresses(const std::string& target) {
  for (const char* list : {"ipv4:", "ipv6:"}) {
    if (!absl::StartsWith(target, list)) continue;
    std::vector<std::string> out;
    for (absl::string_view a : absl::StrSplit(target.substr(5), ',', absl::SkipEmpty())) {
      if (absl::StartsWith(a, "//")) a.remove_prefix(2);
      if (!SplitHostPort(a).ok()) return SplitHostPort(a).status();
      out.emplace_back(a);
    }
    if (out.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cloud target '", target, "' lists no address"));
    }
    return out;
  }
  if (absl::StartsWith(target, "dns:")) {
    absl::string_view name = absl::string_view(target).substr(4);
    if (absl::StartsWith(name, "//")) {  // dns://AUTHORITY/NAME:PORT: the authority is skipped
      const size_t slash = name.find('/', 2);
      if (slash == absl::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("expected dns:///NAME:PORT, found '", target, "'"));
      }
      name.remove_prefix(slash + 1);
    }
    return Resolve(name);
  }
  // Another scheme (unix:, xds:///, ...): nothing to list. A bare NAME:PORT has one colon
  // (or brackets around an IPv6 address).
  const bool bare = absl::StartsWith(target, "[") || target.find(':') == target.rfind(':');
  if (!bare || target.find('/') != std::string::npos) return std::vector<std::string>{};
  return Resolve(target);
}

std::vector<ReplicaCard> ProbeReplicas(const std::vector<std::string>& addresses,
                                       const net::TlsFiles& tls, const std::string& bearer,
                                       double timeout_seconds) {
  std::vector<ReplicaCard> out;
  for (const std::string& address : addresses) {
    ReplicaCard r{address, "", ""};
    auto channel = net::MakeChannel(address, tls, 0);
    if (!channel.ok()) {
      r.error = std::string(channel.status().message());
      out.push_back(r);
      continue;
    }
    auto stub = kvstream::v1::CloudService::NewStub(*channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)));
    net::AddBearer(ctx, bearer);
    kvstream::v1::GetInfoResponse info;
    const grpc::Status st = stub->GetInfo(&ctx, {}, &info);
    if (st.ok()) {
      r.card = info.model_card();
      if (r.card.empty()) r.error = "GetInfo carries no model card (an older kvstream-cloud)";
    } else {
      r.error = absl::StrCat(net::CodeName(st.error_code()), ": ", st.error_message());
    }
    out.push_back(r);
  }
  return out;
}

std::string ExpectedCard(const std::vector<ReplicaCard>& replicas) {
  std::map<std::string, int> votes;
  for (const ReplicaCard& r : replicas) {
    if (!r.card.empty()) ++votes[r.card];
  }
  std::string best;
  int most = 0;
  for (const ReplicaCard& r : replicas) {  // in target order, so ties go to the earliest
    if (!r.card.empty() && votes[r.card] > most) {
      most = votes[r.card];
      best = r.card;
    }
  }
  return best;
}

std::string HealthServiceFor(const std::string& card) {
  return card.empty() ? kService : absl::StrCat(kService, "/", card);
}

}  // namespace kvstream::edge
