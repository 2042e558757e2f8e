#include "cloud/chunk_applier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <vector>

namespace kvstream::cloud {
namespace {

// A chunk of `bytes` whose application calls `f(seq)`.
template <typename F>
absl::Status Push(ChunkApplier& a, uint64_t seq, uint64_t bytes, F& f) {
  return a.Push(bytes, [seq, &f] { return f(seq); });
}

TEST(ChunkApplierTest, AppliesEveryChunkInOrderBeforeDrainReturns) {
  std::vector<uint64_t> applied;  // written on the applier's thread, read after Drain
  auto apply = [&](uint64_t seq) {
    applied.push_back(seq);
    return absl::OkStatus();
  };
  ChunkApplier a(1 << 20);
  for (uint64_t i = 0; i < 50; ++i) ASSERT_TRUE(Push(a, i, 100, apply).ok());
  ASSERT_TRUE(a.Drain().ok());
  ASSERT_EQ(applied.size(), 50u);
  for (uint64_t i = 0; i < 50; ++i) EXPECT_EQ(applied[i], i);
}

// With the queue full, Push waits until the applier makes room; one chunk larger than
// the bound is still taken into an empty queue.
TEST(ChunkApplierTest, PushWaitsWhileTheQueueHoldsItsBytes) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> applied{0};
  auto apply = [&](uint64_t) {
    released.wait();
    ++applied;
    return absl::OkStatus();
  };
  ChunkApplier a(1000);
  ASSERT_TRUE(Push(a, 0, 5000, apply).ok());  // taken (nothing was pending), then held
  // The applier holds chunk 0 (queued bytes 5000 until it is done): the next push waits.
  auto pushed = std::async(std::launch::async, [&] { return Push(a, 1, 600, apply); });
  EXPECT_EQ(pushed.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  release.set_value();
  ASSERT_TRUE(pushed.get().ok());
  ASSERT_TRUE(a.Drain().ok());
  EXPECT_EQ(applied.load(), 2);
}

TEST(ChunkApplierTest, TheFirstErrorStopsApplyingAndIsReturned) {
  std::atomic<int> applied{0};
  auto apply = [&](uint64_t seq) {
    if (seq == 3) return absl::DataLossError("chunk 3: CRC mismatch");
    ++applied;
    return absl::OkStatus();
  };
  ChunkApplier a(1 << 20);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(Push(a, i, 10, apply).ok());
  const absl::Status drained = a.Drain();
  EXPECT_EQ(drained.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(drained.message(), "chunk 3: CRC mismatch");
  const absl::Status later = Push(a, 4, 10, apply);
  EXPECT_EQ(later.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(applied.load(), 3);
}

TEST(ChunkApplierTest, DestructionAppliesWhatIsQueued) {
  std::atomic<int> applied{0};
  auto apply = [&](uint64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ++applied;
    return absl::OkStatus();
  };
  {
    ChunkApplier a(1 << 20);
    for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(Push(a, i, 10, apply).ok());
  }
  EXPECT_EQ(applied.load(), 10);
}

}  // namespace
}  // namespace kvstream::cloud
