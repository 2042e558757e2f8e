#include "cloud/uplink_reader.h"

namespace kvstream::cloud {
namespace {

uint64_t Bytes(const UplinkFrame& f) {
  return f.message.has_chunk() ? f.chunk_bytes() : f.message.ByteSizeLong();
}

}  // namespace

UplinkReader::UplinkReader(Stream* stream, uint64_t max_queued_bytes)
    : stream_(stream), max_queued_bytes_(max_queued_bytes), thread_([this] { Run(); }) {}

UplinkReader::~UplinkReader() {
  if (thread_.joinable()) thread_.join();
}

void UplinkReader::Run() {
  UplinkFrame up;
  for (;;) {
    {
      // Hold the sender back (by not reading) while the session has enough to do.
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [this] { return discarding_ || queued_bytes_ < max_queued_bytes_; });
    }
    if (!stream_->Read(&up)) break;
    std::lock_guard<std::mutex> lock(mu_);
    if (discarding_) continue;
    queued_bytes_ += Bytes(up);
    queue_.push_back(std::move(up));
    changed_.notify_all();
  }
  std::lock_guard<std::mutex> lock(mu_);
  ended_ = true;
  changed_.notify_all();
}

UplinkReader::Got UplinkReader::Next(UplinkFrame* out, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_until(lock, deadline, [this] { return !queue_.empty() || ended_; });
  if (queue_.empty()) return ended_ ? Got::kClosed : Got::kTimedOut;
  *out = std::move(queue_.front());
  queue_.pop_front();
  queued_bytes_ -= Bytes(*out);
  changed_.notify_all();
  return Got::kMessage;
}

void UplinkReader::Discard() {
  std::lock_guard<std::mutex> lock(mu_);
  discarding_ = true;
  queue_.clear();
  queued_bytes_ = 0;
  changed_.notify_all();
}

void UplinkReader::Close(const std::function<void()>& cancel, std::chrono::milliseconds grace) {
  Discard();
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!changed_.wait_for(lock, grace, [this] { return ended_; })) cancel();
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace kvstream::cloud
