#include "cloud/uplink_reader.h"

namespace kvstream::cloud {

UplinkReader::UplinkReader(Stream* stream) : stream_(stream), thread_([this] { Run(); }) {}

UplinkReader::~UplinkReader() {
  if (thread_.joinable()) thread_.join();
}

void UplinkReader::Run() {
  kvstream::v1::Uplink up;
  while (stream_->Read(&up)) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closing_) queue_.push_back(std::move(up));
    changed_.notify_all();
  }
  std::lock_guard<std::mutex> lock(mu_);
  ended_ = true;
  changed_.notify_all();
}

UplinkReader::Got UplinkReader::Next(kvstream::v1::Uplink* out, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_until(lock, deadline, [this] { return !queue_.empty() || ended_; });
  if (!queue_.empty()) {
    *out = std::move(queue_.front());
    queue_.pop_front();
    return Got::kMessage;
  }
  return ended_ ? Got::kClosed : Got::kTimedOut;
}

void UplinkReader::Close(grpc::ServerContext* context, std::chrono::milliseconds grace) {
  std::unique_lock<std::mutex> lock(mu_);
  closing_ = true;
  queue_.clear();
  if (!changed_.wait_for(lock, grace, [this] { return ended_; })) context->TryCancel();
  lock.unlock();
  if (thread_.joinable()) thread_.join();
}

}  // namespace kvstream::cloud
