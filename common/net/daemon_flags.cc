#include "common/net/daemon_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(bool, reflection, true,
          "Serve gRPC server reflection (service discovery for grpcurl and similar tools); "
          "--reflection=false turns it off");
ABSL_FLAG(double, keepalive_seconds, 20,
          "Ping a connection that has been quiet this many seconds and drop it when the ping is "
          "not answered within as long again, so a dead peer fails its calls instead of hanging "
          "them (0: off; at least 1)");
ABSL_FLAG(int, max_streams_per_peer, 64,
          "Calls one client address may hold open at once; more get RESOURCE_EXHAUSTED (0: no "
          "cap)");

namespace kvstream::net {

absl::Status ApplyDaemonFlags(ServeOptions& options) {
  const double keepalive = absl::GetFlag(FLAGS_keepalive_seconds);
  if (keepalive != 0 && !(keepalive >= 1 && keepalive <= 86400)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--keepalive_seconds: expected 0 (off) or 1 to 86400 seconds, found ", keepalive));
  }
  options.keepalive_seconds = keepalive;
  options.reflection = absl::GetFlag(FLAGS_reflection);
  return absl::OkStatus();
}

int MaxStreamsPerPeerFlag() { return absl::GetFlag(FLAGS_max_streams_per_peer); }

}  // namespace kvstream::net
