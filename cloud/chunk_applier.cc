#include "cloud/chunk_applier.h"

namespace kvstream::cloud {

ChunkApplier::ChunkApplier(uint64_t max_queued_bytes) : max_queued_bytes_(max_queued_bytes) {
  worker_ = std::thread([this] { Run(); });
}

ChunkApplier::~ChunkApplier() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

absl::Status ChunkApplier::Push(uint64_t bytes, Apply apply) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] {
    return !error_.ok() || queued_bytes_ == 0 || queued_bytes_ + bytes <= max_queued_bytes_;
  });
  if (!error_.ok()) return error_;
  queue_.push_back({bytes, std::move(apply)});
  queued_bytes_ += bytes;
  changed_.notify_all();
  return absl::OkStatus();
}

absl::Status ChunkApplier::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return (queue_.empty() && !busy_) || !error_.ok(); });
  return error_;
}

void ChunkApplier::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, nothing left
    Item item = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    absl::Status st = error_.ok() ? item.apply() : absl::OkStatus();
    item.apply = nullptr;  // what it owned goes before the bytes are counted free
    lock.lock();
    busy_ = false;
    queued_bytes_ -= item.bytes;
    if (error_.ok() && !st.ok()) error_ = std::move(st);
    changed_.notify_all();
  }
}

}  // namespace kvstream::cloud
