// Real kvstream daemons as child processes for e2e tests: started on free loopback
// ports (gRPC and /metrics), found through the port files they write once serving.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/net/process.h"

namespace kvstream::testing {

// A loopback TCP port free at the time of the call (0 when none could be bound).
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

struct Daemon {
  net::ChildProcess process;
  int port = 0;
  int metrics_port = 0;
};

// Starts `bin_dir`/`binary` with `args` (plus port files, metrics, a 5 s shutdown grace
// and, unless `args` has one, --listen on a free loopback port), logging to `work`/`name`.log, and
// waits for both port files.
inline absl::Status StartDaemon(Daemon& d, const std::string& bin_dir, const std::string& work,
                                const std::string& name, const std::string& binary,
                                std::vector<std::string> args) {
  const std::string port_file = absl::StrCat(work, "/", name, ".port");
  const std::string metrics_file = absl::StrCat(work, "/", name, ".metrics_port");
  const bool has_listen = std::any_of(
      args.begin(), args.end(), [](const std::string& a) { return a.rfind("--listen=", 0) == 0; });
  args.insert(args.begin(), absl::StrCat(bin_dir, "/", binary));
  if (!has_listen) args.push_back("--listen=127.0.0.1:0");
  args.push_back("--port_file=" + port_file);
  args.push_back("--metrics_address=127.0.0.1:0");
  args.push_back("--metrics_port_file=" + metrics_file);
  args.push_back("--shutdown_grace_seconds=5");
  if (absl::Status st = d.process.Start(args, absl::StrCat(work, "/", name, ".log")); !st.ok()) {
    return st;
  }
  auto port = d.process.WaitForPortFile(port_file, 60);
  if (!port.ok()) return port.status();
  d.port = *port;
  auto mport = d.process.WaitForPortFile(metrics_file, 10);
  if (!mport.ok()) return mport.status();
  d.metrics_port = *mport;
  return absl::OkStatus();
}

// Clean shutdown is part of the contract: each daemon still running gets SIGTERM and
// must exit 0 within `timeout_seconds` (in a sanitizer build, that exit runs the leak
// check).
inline void StopCleanly(std::initializer_list<Daemon*> daemons, double timeout_seconds = 20) {
  for (Daemon* d : daemons) {
    if (!d->process.running()) continue;
    auto code = d->process.Stop(timeout_seconds);
    EXPECT_TRUE(code.ok()) << code.status();
    if (code.ok()) {
      EXPECT_EQ(*code, 0);
    }
  }
}

// StopCleanly, then deletes the daemons.
inline void StopDaemons(std::initializer_list<Daemon*> daemons, double timeout_seconds = 20) {
  StopCleanly(daemons, timeout_seconds);
  for (Daemon* d : daemons) delete d;
}

}  // namespace kvstream::testing
