#include "common/base/admission.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace kvstream::base {
namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

system_clock::time_point In(milliseconds ms) { return system_clock::now() + ms; }

// Spins (bounded) until `pred` holds.
template <typename F>
bool Eventually(F pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return pred();
}

TEST(AdmissionGate, AdmitsUpToWorkersAtOnce) {
  AdmissionGate gate({2, 0});
  auto a = gate.Acquire(In(milliseconds(1000)));
  auto b = gate.Acquire(In(milliseconds(1000)));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(gate.running(), 2);
  auto c = gate.Acquire(In(milliseconds(1000)));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(c.status().message().find("--max_queued=0"), std::string::npos) << c.status();
  a->Release();
  EXPECT_EQ(gate.running(), 1);
  EXPECT_TRUE(gate.Acquire(In(milliseconds(1000))).ok());  // released at once again
  EXPECT_EQ(gate.running(), 1);
}

TEST(AdmissionGate, QueuedRequestsRunInArrivalOrder) {
  AdmissionGate gate({1, 8});
  auto held = gate.Acquire(In(milliseconds(5000)));
  ASSERT_TRUE(held.ok());
  std::mutex mu;
  std::vector<int> order;
  std::vector<std::thread> threads;
  for (int i = 0; i < 5; ++i) {
    threads.emplace_back([&, i] {
      auto s = gate.Acquire(In(milliseconds(5000)));
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_GT(s->wait_seconds(), 0);
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(i);
    });
    // Each joins the queue before the next starts.
    ASSERT_TRUE(Eventually([&] { return gate.queued() == i + 1; }));
  }
  held->Release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(gate.running(), 0);
  EXPECT_EQ(gate.queued(), 0);
}

TEST(AdmissionGate, FullQueueRefusesAtOnce) {
  AdmissionGate gate({1, 1});
  auto held = gate.Acquire(In(milliseconds(5000)));
  std::thread queued([&] {
    EXPECT_EQ(gate.Acquire(In(milliseconds(200))).status().code(),
              absl::StatusCode::kDeadlineExceeded);
  });
  ASSERT_TRUE(Eventually([&] { return gate.queued() == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  auto refused = gate.Acquire(In(milliseconds(5000)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(100));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  queued.join();
}

TEST(AdmissionGate, DeadlineInQueueLeavesTheQueue) {
  AdmissionGate gate({1, 4});
  auto held = gate.Acquire(In(milliseconds(5000)));
  const auto t0 = std::chrono::steady_clock::now();
  auto late = gate.Acquire(In(milliseconds(100)));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(waited, milliseconds(95));
  EXPECT_LT(waited, milliseconds(1000));
  EXPECT_EQ(gate.queued(), 0);
  held->Release();
  EXPECT_EQ(gate.running(), 0);  // nobody was left queued to take the slot
}

TEST(AdmissionGate, CancelledCallerLeavesTheQueue) {
  AdmissionGate gate({1, 4});
  auto held = gate.Acquire(In(milliseconds(5000)));
  std::atomic<bool> cancelled{false};
  std::thread t([&] {
    auto s = gate.Acquire(In(milliseconds(5000)), [&] {
      return cancelled ? absl::CancelledError("client cancelled") : absl::OkStatus();
    });
    EXPECT_EQ(s.status().code(), absl::StatusCode::kCancelled);
  });
  ASSERT_TRUE(Eventually([&] { return gate.queued() == 1; }));
  cancelled = true;
  t.join();
  EXPECT_EQ(gate.queued(), 0);
}

TEST(AdmissionGate, CloseRefusesQueuedAndNewButKeepsHeld) {
  std::atomic<int> last_running{-1}, last_queued{-1};
  AdmissionGate gate({1, 4}, [&](int r, int q) {
    last_running = r;
    last_queued = q;
  });
  auto held = gate.Acquire(In(milliseconds(5000)));
  std::thread t([&] {
    EXPECT_EQ(gate.Acquire(In(milliseconds(5000))).status().code(), absl::StatusCode::kUnavailable);
  });
  ASSERT_TRUE(Eventually([&] { return last_queued == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  gate.Close();
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(500));
  EXPECT_EQ(gate.Acquire(In(milliseconds(5000))).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(held->held());
  held->Release();
  EXPECT_EQ(last_running, 0);
  EXPECT_EQ(last_queued, 0);
}

TEST(AdmissionGate, MovedSlotReleasesOnce) {
  AdmissionGate gate({1, 0});
  {
    auto a = gate.Acquire(In(milliseconds(1000)));
    AdmissionGate::Slot moved = std::move(*a);
    EXPECT_FALSE(a->held());
    EXPECT_TRUE(moved.held());
    EXPECT_EQ(gate.running(), 1);
  }
  EXPECT_EQ(gate.running(), 0);
}

TEST(DefaultWorkerSplit, KeepsWorkersTimesThreadsWithinCores) {
  for (int cores : {1, 2, 3, 4, 8, 16, 64}) {
    const WorkerSplit s = DefaultWorkerSplit(cores);
    EXPECT_GE(s.workers, 1);
    EXPECT_GE(s.threads, 1);
    EXPECT_LE(s.workers * s.threads, cores) << cores;
  }
  EXPECT_EQ(DefaultWorkerSplit(2).workers, 1);
  EXPECT_EQ(DefaultWorkerSplit(2).threads, 2);
  EXPECT_EQ(DefaultWorkerSplit(16).workers, 4);
  EXPECT_EQ(DefaultWorkerSplit(16).threads, 4);
}

}  // namespace
}  // namespace kvstream::base
