#include "common/net/watchdog.h"

namespace kvstream::net {

StreamWatchdog::Watch::~Watch() { dog_->Remove(id_); }
void StreamWatchdog::Watch::ExtendBy(double seconds) { dog_->Set(id_, seconds, seconds > 0); }
void StreamWatchdog::Watch::Disarm() { dog_->Set(id_, 0, false); }

StreamWatchdog::StreamWatchdog(std::chrono::milliseconds tick)
    : tick_(tick), thread_([this] { Run(); }) {}

StreamWatchdog::~StreamWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::unique_ptr<StreamWatchdog::Watch> StreamWatchdog::Start(grpc::ServerContext* context,
                                                             double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t id = next_id_++;
  std::unique_ptr<Watch> watch(new Watch(this, id));
  entries_[id] = {context, watch.get(), Clock::now(), false};
  if (seconds > 0) {
    entries_[id].deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(seconds));
    entries_[id].armed = true;
  }
  return watch;
}

void StreamWatchdog::Set(uint64_t id, double seconds, bool armed) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  it->second.armed = armed;
  it->second.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(seconds));
}

void StreamWatchdog::Remove(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(id);
}

void StreamWatchdog::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    const auto now = Clock::now();
    for (auto& [id, e] : entries_) {
      if (!e.armed || e.deadline > now) continue;
      e.armed = false;  // cancel once
      e.watch->expired_ = true;
      e.context->TryCancel();
    }
    cv_.wait_for(lock, tick_);
  }
}

}  // namespace kvstream::net
