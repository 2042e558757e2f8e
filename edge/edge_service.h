// kvstream-edge's EdgeService: Ask(context, question, policy) -> answer tokens, then the
// request's stats. Per request: ChatML prompt with spans -> tokenize -> scout prefill
// (with attention statistics when a selector needs them) -> select -> encode chunks ->
// one CloudService.Transfer stream (SessionOpen, KvChunks written one at a time, so
// gRPC flow control paces the edge, then Commit) -> relay the cloud's tokens.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/metrics/metrics.h"
#include "common/model/model.h"
#include "common/model/tokenizer.h"
#include "edge/policy.h"
#include "kvstream/v1/service.grpc.pb.h"

namespace kvstream::edge {

struct EdgeOptions {
  std::string cloud_address;
  kvstream::v1::Policy defaults;  // mode, selector, retention, spec, max_tokens, cloud_model
  std::string system_prompt = "Answer with the value from the context.";
  uint64_t chunk_bytes = 1 << 20;  // cap on a chunk's payload before zstd
  int snapkv_window = 32;
};

class EdgeService final : public kvstream::v1::EdgeService::Service {
 public:
  EdgeService(std::unique_ptr<model::Model> scout, std::unique_ptr<model::Tokenizer> tokenizer,
              const EdgeOptions& options, metrics::MetricsServer& metrics,
              std::unique_ptr<PolicyChooser> chooser = nullptr);
  ~EdgeService() override;

  grpc::Status Ask(grpc::ServerContext* context, const kvstream::v1::AskRequest* request,
                   grpc::ServerWriter<kvstream::v1::AskEvent>* writer) override;

 private:
  struct Metrics;
  struct Request;
  absl::Status Serve(grpc::ServerContext* context, const kvstream::v1::AskRequest& request,
                     grpc::ServerWriter<kvstream::v1::AskEvent>* writer, Request& r);
  // The cloud's GetInfo, fetched on first use and kept (models and rates do not change
  // while a cloud runs; a failed fetch is retried on the next request).
  absl::StatusOr<kvstream::v1::GetInfoResponse> CloudInfo();

  std::unique_ptr<model::Model> scout_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  EdgeOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<PolicyChooser> chooser_;
  std::unique_ptr<kvstream::v1::CloudService::Stub> cloud_;
  std::mutex info_mu_;
  std::optional<kvstream::v1::GetInfoResponse> info_;
};

}  // namespace kvstream::edge
