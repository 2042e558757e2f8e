#include "common/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvstream::metrics {
namespace {

// Scrapers send one short GET and read to EOF. A client gets kReadTimeout from accept to
// send its request (in total: trickling bytes does not extend it) and kWriteTimeout to
// read the answer; at most kMaxConnections are served at once.
constexpr size_t kMaxRequestBytes = 16384;
constexpr size_t kMaxConnections = 64;
constexpr auto kReadTimeout = std::chrono::seconds(2);
constexpr auto kWriteTimeout = std::chrono::seconds(10);

std::string Response(int code, const char* reason, const char* type, const std::string& body) {
  return absl::StrCat("HTTP/1.1 ", code, " ", reason, "\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace

MetricsServer::MetricsServer() : registry_(std::make_shared<prometheus::Registry>()) {}

MetricsServer::~MetricsServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

absl::Status MetricsServer::Start(const std::string& address) {
  if (address.empty()) return absl::OkStatus();
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address: expected HOST:PORT, found '", address, "'"));
  }
  const std::string host = address.substr(0, colon);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (host.empty() || host == "0.0.0.0") {
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
  } else if (host == "localhost") {
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  } else if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address: expected an IPv4 host, found '", host, "'"));
  }
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0)
    return absl::UnavailableError(absl::StrCat("metrics: socket: ", std::strerror(errno)));
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  socklen_t len = sizeof(addr);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string err = std::strerror(errno);
    ::close(listen_fd_);
    listen_fd_ = -1;
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address, ": ", err));
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { ServeLoop(); });
  return absl::OkStatus();
}

namespace {

using Clock = std::chrono::steady_clock;

// One scrape connection: the request is read, then the response written, without
// blocking the loop; both within a deadline that starts at accept.
struct Connection {
  int fd = -1;
  std::string in, out;
  size_t sent = 0;
  bool answered = false;
  Clock::time_point read_deadline, write_deadline;
};

std::string Answer(const std::string& req, const MetricsServer& server) {
  if (absl::StartsWith(req, "GET /metrics ") || absl::StartsWith(req, "GET /metrics?")) {
    return Response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", server.Text());
  }
  if (absl::StartsWith(req, "GET ")) {
    return Response(404, "Not Found", "text/plain", "only /metrics is served here\n");
  }
  return Response(405, "Method Not Allowed", "text/plain", "expected GET /metrics\n");
}

// Reads what is there; true while the connection should stay open.
bool ReadSome(Connection& c, const MetricsServer& server) {
  char buf[2048];
  const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return false;
  if (n > 0) c.in.append(buf, static_cast<size_t>(n));
  if (c.in.find("\r\n\r\n") != std::string::npos || c.in.size() > kMaxRequestBytes) {
    c.out = Answer(c.in, server);
    c.answered = true;
  }
  return true;
}

// Writes what the socket takes; true while there is more to write.
bool WriteSome(Connection& c) {
  const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n <= 0) return false;
  c.sent += static_cast<size_t>(n);
  return c.sent < c.out.size();
}

}  // namespace

void MetricsServer::ServeLoop() {
  std::vector<Connection> conns;
  std::vector<pollfd> fds;
  while (!stop_) {
    fds.clear();
    for (const Connection& c : conns)
      fds.push_back({c.fd, static_cast<short>(c.answered ? POLLOUT : POLLIN), 0});
    // At the connection cap new clients wait in the listen backlog until one finishes or
    // times out.
    if (conns.size() < kMaxConnections) fds.push_back({listen_fd_, POLLIN, 0});
    ::poll(fds.data(), fds.size(), 100);
    const Clock::time_point now = Clock::now();
    std::vector<Connection> keep;
    for (size_t i = 0; i < conns.size(); ++i) {
      Connection& c = conns[i];
      bool open = now < (c.answered ? c.write_deadline : c.read_deadline);
      const short ev = fds[i].revents;
      if (open && !c.answered && (ev & (POLLIN | POLLHUP | POLLERR))) open = ReadSome(c, *this);
      if (open && c.answered && (ev & (POLLOUT | POLLHUP | POLLERR))) open = WriteSome(c);
      if (open) {
        keep.push_back(std::move(c));
      } else {
        ::close(c.fd);
      }
    }
    conns.swap(keep);
    if (conns.size() < kMaxConnections && fds.back().fd == listen_fd_ &&
        (fds.back().revents & POLLIN)) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) conns.push_back({fd, {}, {}, 0, false, now + kReadTimeout, now + kWriteTimeout});
    }
  }
  for (const Connection& c : conns) ::close(c.fd);
}

std::string MetricsServer::Text() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double s = 0.0005; s < 70; s *= 2) b.push_back(s);
  return b;
}

prometheus::Histogram::BucketBoundaries RatioBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double r = 1; r <= 1024; r *= 2) b.push_back(r);
  return b;
}

}  // namespace kvstream::metrics
