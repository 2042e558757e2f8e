// kvstream health: asks a daemon's grpc.health.v1 service whether it is serving; exit
// code 0 when SERVING (usable as a container or systemd health check).
#include <cstdio>

#include "absl/flags/flag.h"
#include "common/net/grpc_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Address of the daemon to check (edge or cloud)");
ABSL_FLAG(std::string, service, "", "Service name to check (empty: the server as a whole)");
ABSL_FLAG(double, health_timeout, 5, "Seconds to wait for an answer");

namespace kvstream::cli {

int RunHealth() {
  auto channel = DaemonChannel(absl::GetFlag(FLAGS_target));
  if (!channel.ok()) {
    std::fprintf(stderr, "kvstream health: %s\n", std::string(channel.status().message()).c_str());
    return 2;
  }
  auto stub = grpc::health::v1::Health::NewStub(*channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_health_timeout) * 1000)));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status st = stub->Check(&ctx, req, &resp);
  if (!st.ok()) {
    std::fprintf(stderr, "kvstream health: %s: %s: %s\n", absl::GetFlag(FLAGS_target).c_str(),
                 net::CodeName(st.error_code()), st.error_message().c_str());
    return 1;
  }
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
  std::printf("%s\n", name.c_str());
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace kvstream::cli
