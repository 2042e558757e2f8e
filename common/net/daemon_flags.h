// Flags both daemons take for their gRPC server: reflection, keepalive, and the cap on
// concurrent calls per client. Defined here once and linked only into the daemons.
#pragma once

#include "absl/status/statusor.h"
#include "common/net/daemon.h"

namespace kvstream::net {

// Copies --reflection and --keepalive_seconds into `options`; an error names a bad value.
absl::Status ApplyDaemonFlags(ServeOptions& options);
// --max_streams_per_peer (0: no cap).
int MaxStreamsPerPeerFlag();
// --tls_reload_seconds (TlsFiles::reload_seconds); an error names a bad value.
absl::StatusOr<int> TlsReloadSecondsFlag();
// Caps malloc arenas at --malloc_arenas (0: model workers + 1, from `model_workers_flag`
// or the default split of this machine's cores) and logs it; call first thing in main.
absl::Status LimitArenasFromFlag(const std::string& component, int model_workers_flag);

}  // namespace kvstream::net
