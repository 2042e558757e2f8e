// Child daemons for `kvstream demo`, tests and benches: start a binary with arguments,
// wait for the port file it writes once serving, and stop it with SIGTERM, reporting
// how it exited.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvstream::net {

// The directory of the running executable (sibling binaries live there); "." if unknown.
std::string ExecutableDir();
// `dir` when set (created if missing), else a fresh /tmp/<prefix>-XXXXXX directory: where
// launchers keep port files and daemon logs.
absl::StatusOr<std::string> WorkDir(const std::string& dir, const std::string& prefix);

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Kills (SIGKILL) a child still running.
  ~ChildProcess();

  // Starts `argv[0]` with `argv`; stdout and stderr go to `log_path` (empty: inherited).
  absl::Status Start(const std::vector<std::string>& argv, const std::string& log_path = "");
  // Waits until `path` holds a port number (written by the child), or the child exits,
  // or `timeout_seconds` pass.
  absl::StatusOr<int> WaitForPortFile(const std::string& path, double timeout_seconds);
  // SIGTERM, then waits up to `timeout_seconds`; returns the exit code (SIGKILL and an
  // error if it did not exit in time, or an error naming the signal that killed it).
  absl::StatusOr<int> Stop(double timeout_seconds);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::string name_;
};

}  // namespace kvstream::net
