// A loopback TCP proxy for fault tests: forwards every connection to a target port and
// can break them all, as a failed network path would, once a number of bytes has gone
// upstream. Connections made after the break are forwarded normally.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace kvstream::testing {

class TcpProxy {
 public:
  explicit TcpProxy(int target_port) : target_port_(target_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        listen(listen_fd_, 16) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }

  ~TcpProxy() {
    stop_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    cut_at_ = UINT64_MAX;
    CutAll();
    std::vector<std::thread> pumps;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pumps.swap(pumps_);
    }
    for (std::thread& t : pumps) t.join();  // unlocked: a pump may take the lock to cut
    for (int fd : fds_) close(fd);
    close(listen_fd_);
  }

  int port() const { return port_; }  // 0 when the proxy could not listen
  uint64_t upstream_bytes() const { return upstream_; }
  int cuts() const { return cuts_; }

  // Breaks every connection open at that moment once `total` bytes (counted since the
  // proxy started) have been forwarded upstream; once.
  void CutOnceAfter(uint64_t total) { cut_at_ = total; }

 private:
  void Accept() {
    while (!stop_) {
      const int client = accept(listen_fd_, nullptr, nullptr);
      if (client < 0) return;
      const int server = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(target_port_));
      if (connect(server, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        close(client);
        close(server);
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      fds_.push_back(client);
      fds_.push_back(server);
      pumps_.emplace_back([this, client, server] { Pump(client, server, true); });
      pumps_.emplace_back([this, client, server] { Pump(server, client, false); });
    }
  }

  void Pump(int from, int to, bool upstream) {
    char buf[16384];
    for (;;) {
      const ssize_t n = read(from, buf, sizeof(buf));
      if (n <= 0) break;
      ssize_t off = 0;
      while (off < n) {
        // send(MSG_NOSIGNAL), not write(): `to` may be shut down by the other pump or
        // closed by its peer, and SIGPIPE would kill the test binary.
        const ssize_t w = send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w <= 0) break;
        off += w;
      }
      if (off < n) break;
      if (upstream && (upstream_ += static_cast<uint64_t>(n)) >= cut_at_.load()) {
        cut_at_ = UINT64_MAX;
        ++cuts_;
        CutAll();
      }
    }
    shutdown(from, SHUT_RDWR);
    shutdown(to, SHUT_RDWR);
  }

  void CutAll() {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);
  }

  const int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> upstream_{0};
  std::atomic<uint64_t> cut_at_{UINT64_MAX};
  std::atomic<int> cuts_{0};
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> pumps_;
  std::thread acceptor_;
};

}  // namespace kvstream::testing
