// A blocking HTTP/1.1 GET over loopback for tests (scraping /metrics).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace kvstream::testing {

struct HttpResponse {
  int status = 0;  // 0: no connection or no valid response
  std::string body;
};

inline HttpResponse HttpGet(int port, const std::string& path) {
  HttpResponse r;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return r;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return r;
  }
  const std::string req =
      "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return r;
  }
  std::string all;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  const size_t sp = all.find(' ');
  const size_t end = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.1 ", 0) != 0 || sp == std::string::npos || end == std::string::npos)
    return r;
  r.status = std::stoi(all.substr(sp + 1, 3));
  r.body = all.substr(end + 4);
  return r;
}

// One series' value on a daemon's /metrics page: `name` alone for an unlabelled gauge,
// or with its labels as the page writes them (`name{code="OK",mode="kv"}`); -1 when the
// page does not have it.
inline double MetricValue(int metrics_port, const std::string& series) {
  const std::string body = HttpGet(metrics_port, "/metrics").body;
  const size_t at = body.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(body.substr(at + series.size() + 2));
}

}  // namespace kvstream::testing
