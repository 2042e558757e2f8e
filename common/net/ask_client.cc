#include "common/net/ask_client.h"

#include <chrono>

#include "common/net/auth.h"
#include "common/net/grpc_util.h"

namespace kvstream::net {

absl::StatusOr<AskResult> Ask(kvstream::v1::EdgeService::Stub& stub,
                              const kvstream::v1::AskRequest& request, const AskCall& call) {
  using Clock = std::chrono::steady_clock;
  grpc::ClientContext ctx;
  AddBearer(ctx, call.bearer_token);
  if (call.timeout_seconds > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::microseconds(static_cast<int64_t>(call.timeout_seconds * 1e6)));
  }
  if (call.on_start) call.on_start(&ctx);
  AskResult r;
  const auto start = Clock::now();
  bool first = true;
  std::unique_ptr<grpc::ClientReader<kvstream::v1::AskEvent>> reader = stub.Ask(&ctx, request);
  kvstream::v1::AskEvent ev;
  while (reader->Read(&ev)) {
    if (ev.has_token()) {
      if (first) {
        r.client_ttft_seconds = std::chrono::duration<double>(Clock::now() - start).count();
        first = false;
      }
      r.answer += ev.token().text();
      r.token_ids.push_back(ev.token().id());
      if (call.on_token) call.on_token(ev.token());
    } else if (ev.has_stats()) {
      r.stats = ev.stats();
    }
  }
  const grpc::Status st = reader->Finish();
  r.client_total_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!st.ok()) return FromGrpc(st);
  if (first) r.client_ttft_seconds = r.client_total_seconds;
  return r;
}

}  // namespace kvstream::net
