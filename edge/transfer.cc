#include "edge/transfer.h"

#include "common/control/controller.h"
#include "common/net/auth.h"

namespace kvstream::edge {

using kvstream::v1::Downlink;
using kvstream::v1::Uplink;

CloudTransfer::CloudTransfer(const std::shared_ptr<grpc::ChannelInterface>& channel,
                             std::unique_ptr<grpc::ClientContext> context, OnToken on_token,
                             net::Shaper* shaper, const std::string& bearer, bool zero_copy)
    : channel_(channel),
      context_(std::move(context)),
      zero_copy_(zero_copy),
      on_token_(std::move(on_token)),
      shaper_(shaper) {
  net::AddBearer(*context_, bearer);
  // The generated stub writes Uplink messages; this stream writes OutgoingUplinks, whose
  // chunk payloads gRPC sends without a copy. The method is not registered with the
  // channel (the stub registers its own once): gRPC names it on each call instead.
  const grpc::internal::RpcMethod method(net::TransferMethodPath(),
                                         grpc::internal::RpcMethod::BIDI_STREAMING);
  stream_.reset(grpc::internal::ClientReaderWriterFactory<net::OutgoingUplink, Downlink>::Create(
      channel.get(), method, context_.get()));
  result_.start = result_.last_ack = Clock::now();
  reader_ = std::thread([this] { Read(); });
}

CloudTransfer::~CloudTransfer() {
  if (!finished_) {
    context_->TryCancel();
    reader_.join();
  }
}

double CloudTransfer::Since(Clock::time_point t) const {
  return std::chrono::duration<double>(t - result_.start).count();
}

void CloudTransfer::Read() {
  Downlink d;
  bool first = true;
  while (stream_->Read(&d)) {
    if (first && shaper_ != nullptr) shaper_->Delay();  // downlink one-way delay
    first = false;
    if (d.has_opened()) {
      std::lock_guard<std::mutex> lock(mu_);
      result_.opened = Since(Clock::now());
      opened_seq_ = d.opened().next_seq();
      opened_cv_.notify_all();
    } else if (d.has_ack()) {
      result_.last_ack = Clock::now();
      std::lock_guard<std::mutex> lock(mu_);
      const uint64_t i = d.ack().seq() - result_.first_seq;  // wraps when below: ignored
      if (i < result_.acked.size()) result_.acked[i] = Since(result_.last_ack);
    } else if (d.has_token()) {
      if (!result_.have_token) {
        result_.first_token = Clock::now();
        result_.have_token = true;
        stopped_ = true;
      }
      ++result_.tokens;
      if (!on_token_(d.token())) {
        client_gone_ = true;
        context_->TryCancel();
        break;
      }
    } else if (d.has_stop()) {
      stopped_ = true;
    } else if (d.has_done()) {
      result_.cloud = d.done().stats();
      result_.have_done = true;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  reader_done_ = true;
  opened_cv_.notify_all();
}

std::optional<uint64_t> CloudTransfer::WaitOpened() {
  std::unique_lock<std::mutex> lock(mu_);
  opened_cv_.wait(lock, [this] { return opened_seq_.has_value() || reader_done_; });
  if (!opened_seq_) return std::nullopt;
  result_.first_seq = *opened_seq_;
  result_.resumed = true;  // chunks follow the Opened round trip, not the SessionOpen
  return opened_seq_;
}

bool CloudTransfer::SendOpen(const Uplink& open) {
  net::OutgoingUplink up(open);
  const uint64_t bytes = up.ByteSize();
  result_.wire_bytes += bytes;
  uplink_start_ = Since(Clock::now());
  result_.open_sent = uplink_start_;
  if (shaper_ != nullptr) {
    shaper_->Delay();  // uplink one-way delay
    shaper_->Transmit(bytes);
  }
  return stream_->Write(up);
}

bool CloudTransfer::SendChunk(net::SharedChunk chunk) {
  const net::OutgoingUplink up(std::move(chunk), zero_copy_);
  const uint64_t bytes = up.ByteSize();
  result_.wire_bytes += bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    result_.chunk_bytes.push_back(bytes);
    // The first chunk's clock starts with the stream, so its ack delay spans a round trip.
    result_.sent.push_back(result_.chunks == 0 && !result_.resumed ? uplink_start_
                                                                   : Since(Clock::now()));
    result_.acked.push_back(-1);
  }
  ++result_.chunks;
  if (shaper_ != nullptr) shaper_->Transmit(bytes);
  return stream_->Write(up);
}

bool CloudTransfer::SendCommit(const std::optional<kvstream::v1::AnswerCheck>& check) {
  Uplink commit;
  commit.mutable_commit()->set_num_chunks(next_seq());
  if (check) *commit.mutable_commit()->mutable_check() = *check;
  const net::OutgoingUplink up(std::move(commit));
  result_.wire_bytes += up.ByteSize();
  if (shaper_ != nullptr) shaper_->Transmit(up.ByteSize());
  return stream_->Write(up);
}

void CloudTransfer::Cancel() { context_->TryCancel(); }

double CloudTransfer::AckedBandwidth(double fallback) {
  std::lock_guard<std::mutex> lock(mu_);
  control::LinkEstimator local;
  control::AddAckGapSamples(local, result_.chunk_bytes, result_.sent, result_.acked);
  return local.has_bandwidth() ? local.bandwidth_bps() : fallback;
}

uint64_t CloudTransfer::UnackedBytes() {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t bytes = 0;
  for (size_t i = 0; i < result_.chunk_bytes.size(); ++i) {
    if (result_.acked[i] < 0) bytes += result_.chunk_bytes[i];
  }
  return bytes;
}

CloudTransfer::Result CloudTransfer::Finish() {
  stream_->WritesDone();
  result_.writes_done = Clock::now();
  reader_.join();
  finished_ = true;
  result_.status = stream_->Finish();
  result_.client_gone = client_gone_;
  return result_;
}

}  // namespace kvstream::edge
