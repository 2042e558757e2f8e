// Deadlines for server-side streams that the synchronous gRPC API cannot put on a Read:
// a stream registers when it starts and moves its deadline as messages arrive; a
// background thread cancels (ServerContext::TryCancel) every stream whose deadline
// passed, so its blocked Read returns and the handler frees what it holds. The cloud
// uses it for the SessionOpen timeout and the idle timeout of open sessions.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace kvstream::net {

class StreamWatchdog {
 public:
  using Clock = std::chrono::steady_clock;

  // One watched stream. Destroying it stops the watch.
  class Watch {
   public:
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
    // The stream is cancelled unless it moves again within `seconds` from now.
    void ExtendBy(double seconds);
    // No deadline from here on (the stream's own deadline still applies).
    void Disarm();
    // True once the watchdog cancelled the stream.
    bool expired() const { return expired_; }

   private:
    friend class StreamWatchdog;
    Watch(StreamWatchdog* dog, uint64_t id) : dog_(dog), id_(id) {}
    StreamWatchdog* dog_;
    uint64_t id_;
    std::atomic<bool> expired_{false};
  };

  // Checks every `tick`.
  explicit StreamWatchdog(std::chrono::milliseconds tick = std::chrono::milliseconds(100));
  ~StreamWatchdog();

  // Watches `context`, cancelling it unless it moves within `seconds` (<= 0: never).
  std::unique_ptr<Watch> Start(grpc::ServerContext* context, double seconds);

 private:
  struct Entry {
    grpc::ServerContext* context;
    Watch* watch;
    Clock::time_point deadline;
    bool armed;
  };
  void Set(uint64_t id, double seconds, bool armed);
  void Remove(uint64_t id);
  void Run();

  const std::chrono::milliseconds tick_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Entry> entries_;
  uint64_t next_id_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace kvstream::net
