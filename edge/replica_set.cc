#include "edge/replica_set.h"

#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/net/auth.h"

namespace kvstream::edge {

absl::StatusOr<std::unique_ptr<ReplicaSet>> ReplicaSet::Start(const Options& options) {
  if (options.addresses.empty()) {
    return absl::InvalidArgumentError(
        "least_loaded balancing needs the replicas' addresses: an ipv4:/ipv6: list, a "
        "host:port or a dns:/// name the edge can resolve");
  }
  std::unique_ptr<ReplicaSet> set(new ReplicaSet(options));
  // One address per channel: pick_first, with the health check.
  ASSIGN_OR_RETURN(const std::string config,
                   net::ReplicaServiceConfig("pick_first", options.health_service));
  for (const std::string& address : options.addresses) {
    auto r = std::make_unique<Replica>();
    r->address = address;
    auto channel = net::MakeChannel(address, options.tls, options.keepalive_seconds, config);
    if (!channel.ok()) return channel.status();
    r->channel = *channel;
    r->channel->GetState(/*try_to_connect=*/true);
    r->stub = kvstream::v1::CloudService::NewStub(r->channel);
    set->replicas_.push_back(std::move(r));
  }
  set->PollOnce();
  set->poller_ = std::thread([s = set.get()] { s->PollLoop(); });
  return set;
}

ReplicaSet::~ReplicaSet() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
}

void ReplicaSet::PollLoop() {
  const auto period = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options_.poll_seconds));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_cv_.wait_for(lock, period, [this] { return stop_; })) {
    lock.unlock();
    PollOnce();
    lock.lock();
  }
}

void ReplicaSet::PollOnce() {
  for (auto& r : replicas_) {
    kvstream::v1::GetInfoResponse info;
    bool ok = r->channel->GetState(true) == GRPC_CHANNEL_READY;
    if (ok) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
      net::AddBearer(ctx, options_.bearer);
      ok = r->stub->GetInfo(&ctx, {}, &info).ok();
    }
    std::lock_guard<std::mutex> lock(mu_);
    r->polled = ok;
    if (ok) {
      r->polled_sessions = info.active_sessions();
      r->max_sessions = info.max_sessions();
      r->polled_bytes = info.cache_budget_bytes() > 0
                            ? static_cast<double>(info.cache_bytes_in_use()) /
                                  static_cast<double>(info.cache_budget_bytes())
                            : 0;
      r->own_at_poll = r->own;
    }
    UpdateGauges(*r);
  }
}

void ReplicaSet::ExportTo(prometheus::Registry& registry) {
  auto& load = prometheus::BuildGauge()
                   .Name("kvstream_edge_cloud_replica_load")
                   .Help(
                       "--cloud_lb=least_loaded: a cloud replica's fuller share (sessions or "
                       "cache bytes) at the last poll, with this edge's sessions since")
                   .Register(registry);
  auto& up = prometheus::BuildGauge()
                 .Name("kvstream_edge_cloud_replica_up")
                 .Help(
                     "--cloud_lb=least_loaded: 1 when the last poll reached the replica "
                     "(READY, answered GetInfo in time), else 0")
                 .Register(registry);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : replicas_) {
    r->load_gauge = &load.Add({{"replica", r->address}});
    r->up_gauge = &up.Add({{"replica", r->address}});
    UpdateGauges(*r);
  }
}

void ReplicaSet::UpdateGauges(const Replica& r) const {
  if (r.load_gauge == nullptr) return;
  r.load_gauge->Set(Load(r));
  r.up_gauge->Set(r.polled ? 1 : 0);
}

double ReplicaSet::Load(const Replica& r) const {
  const double sessions = r.polled_sessions + r.own - r.own_at_poll;
  return std::max(r.max_sessions > 0 ? sessions / r.max_sessions : 0.0, r.polled_bytes);
}

ReplicaSet::Picked ReplicaSet::Pick() {
  std::lock_guard<std::mutex> lock(mu_);
  Replica* best = nullptr;
  double best_load = 0;
  const size_t n = replicas_.size();
  for (size_t i = 0; i < n; ++i) {  // from the round-robin position, so ties rotate
    Replica* r = replicas_[(next_ + i) % n].get();
    if (r->channel->GetState(false) != GRPC_CHANNEL_READY) continue;
    const double load = Load(*r);
    if (best == nullptr || load < best_load) {
      best = r;
      best_load = load;
    }
  }
  next_ = (next_ + 1) % n;
  if (best != nullptr) {
    ++best->own;
    UpdateGauges(*best);
  }
  return Picked(this, best);
}

ReplicaSet::Picked::~Picked() {
  if (replica_ == nullptr) return;
  std::lock_guard<std::mutex> lock(set_->mu_);
  --replica_->own;
  set_->UpdateGauges(*replica_);
}

bool ReplicaSet::WaitForReady(std::chrono::system_clock::time_point deadline) {
  for (;;) {
    for (auto& r : replicas_) {
      if (r->channel->GetState(true) == GRPC_CHANNEL_READY) return true;
    }
    if (std::chrono::system_clock::now() >= deadline) return false;
    // Any replica's change of state wakes this up soon enough; poll in short steps.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

kvstream::v1::CloudService::Stub& ReplicaSet::AnyStub() {
  for (auto& r : replicas_) {
    if (r->channel->GetState(false) == GRPC_CHANNEL_READY) return *r->stub;
  }
  return *replicas_.front()->stub;
}

}  // namespace kvstream::edge
