// --cloud_lb=least_loaded: the edge keeps a channel per cloud replica and sends each
// session to the ready replica with the most room. Every `poll_seconds` it asks each
// replica for its load (GetInfo: open sessions against --max_sessions, reserved cache
// bytes against --cache_budget_bytes) and takes the fuller of the two shares, with its own
// sessions counted as they start and end between polls, so a burst does not all go to
// one replica. Ties go round robin. A replica whose channel is not READY (down, or failing
// its health check for the model card) gets nothing.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/net/grpc_util.h"
#include "kvstream/v1/service.grpc.pb.h"

namespace prometheus {
class Gauge;
class Registry;
}  // namespace prometheus

namespace kvstream::edge {

class ReplicaSet {
 public:
  struct Options {
    std::vector<std::string> addresses;
    net::TlsFiles tls;
    std::string bearer;
    double keepalive_seconds = net::kDefaultKeepaliveSeconds;
    std::string health_service;  // checked on each replica's channel (empty: none)
    double poll_seconds = 1;
  };
  struct Replica {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<kvstream::v1::CloudService::Stub> stub;
    // At the last poll: open sessions, their limit, and the reserved share of the cache.
    uint32_t polled_sessions = 0, max_sessions = 0;
    double polled_bytes = 0;
    // This edge's sessions on the replica now, and when it was polled.
    int own = 0, own_at_poll = 0;
    // Whether the last poll reached it (READY, answered GetInfo in time).
    bool polled = false;
    // kvstream_edge_cloud_replica_{load,up}{replica=address}, once exported.
    prometheus::Gauge* load_gauge = nullptr;
    prometheus::Gauge* up_gauge = nullptr;
  };
  // A session on a replica, counted against it while this lives.
  class Picked {
   public:
    Picked(ReplicaSet* set, Replica* replica) : set_(set), replica_(replica) {}
    Picked(Picked&& o) noexcept : set_(o.set_), replica_(o.replica_) { o.replica_ = nullptr; }
    Picked(const Picked&) = delete;
    Picked& operator=(const Picked&) = delete;
    ~Picked();
    Replica* operator->() const { return replica_; }
    explicit operator bool() const { return replica_ != nullptr; }

   private:
    ReplicaSet* set_;
    Replica* replica_;
  };

  // INVALID_ARGUMENT without addresses or for bad TLS files.
  static absl::StatusOr<std::unique_ptr<ReplicaSet>> Start(const Options& options);
  ~ReplicaSet();
  ReplicaSet(const ReplicaSet&) = delete;
  ReplicaSet& operator=(const ReplicaSet&) = delete;

  // The replica for the next session, counted against it until the Picked is destroyed;
  // empty when none is READY.
  Picked Pick();
  // Exports each replica's load share and whether the last poll reached it, updated at
  // every poll, as kvstream_edge_cloud_replica_load / _up{replica="address"}.
  void ExportTo(prometheus::Registry& registry);
  // Whether a replica is READY, waiting until `deadline` for one to connect.
  bool WaitForReady(std::chrono::system_clock::time_point deadline);
  // A READY replica's stub for calls that are not sessions (GetInfo), or the first.
  kvstream::v1::CloudService::Stub& AnyStub();
  std::shared_ptr<grpc::Channel> first_channel() const { return replicas_.front()->channel; }

 private:
  explicit ReplicaSet(const Options& options) : options_(options) {}
  void PollLoop();
  void PollOnce();
  double Load(const Replica& r) const;        // under mu_
  void UpdateGauges(const Replica& r) const;  // under mu_

  Options options_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::mutex mu_;  // guards the load fields
  size_t next_ = 0;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread poller_;
};

}  // namespace kvstream::edge
