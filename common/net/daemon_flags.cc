#include "common/net/daemon_flags.h"

#include <algorithm>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/base/admission.h"
#include "common/base/log.h"
#include "common/base/memory.h"

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
ABSL_FLAG(int, tls_reload_seconds, 0,
          "Read every TLS certificate, key and CA file again this often (the edge's link to the "
          "cloud too), so that a certificate rotated in place is used by new connections "
          "without a restart; open connections keep theirs (0: read once at start-up)");

ABSL_FLAG(int, malloc_arenas, 0,
          "Most malloc arenas the process uses; fewer keep less freed memory per thread (RSS "
          "after a 64-request burst: 227 MB with 2, 438-466 MB with glibc's 8 per core, same "
          "latency). 0: --model_workers + 1. MALLOC_ARENA_MAX in the environment wins");

namespace kvstream::net {

absl::StatusOr<int> TlsReloadSecondsFlag() {
  const int seconds = absl::GetFlag(FLAGS_tls_reload_seconds);
  if (seconds < 0 || seconds > 86400) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_reload_seconds: expected 0 (read once) to 86400 seconds, found ", seconds));
  }
  return seconds;
}

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

absl::Status LimitArenasFromFlag(const std::string& component, int model_workers_flag) {
  int arenas = absl::GetFlag(FLAGS_malloc_arenas);
  if (arenas < 0 || arenas > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--malloc_arenas: expected 0 (auto) to 1024, found ", arenas));
  }
  if (arenas == 0) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    arenas =
        (model_workers_flag > 0 ? model_workers_flag : base::DefaultWorkerSplit(cores).workers) + 1;
  }
  logging::Logf(logging::Level::kInfo, component, "%s", base::LimitArenas(arenas));
  return absl::OkStatus();
}

}  // namespace kvstream::net
