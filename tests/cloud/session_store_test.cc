#include "cloud/session_store.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace kvstream::cloud {
namespace {

TEST(SessionStoreTest, EnforcesSessionCountAndFreesOnLeaseDestruction) {
  std::vector<std::pair<uint32_t, uint64_t>> changes;
  SessionStore store(2, 1000, [&](uint32_t n, uint64_t b) { changes.emplace_back(n, b); });
  {
    auto a = store.Acquire("a", 100);
    ASSERT_TRUE(a.ok()) << a.status();
    auto b = store.Acquire("b", 100);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(store.active(), 2u);
    EXPECT_EQ(store.bytes_in_use(), 200u);
    auto c = store.Acquire("c", 1);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(c.status().message().find("--max_sessions=2"), std::string::npos) << c.status();
  }
  EXPECT_EQ(store.active(), 0u);
  EXPECT_EQ(store.bytes_in_use(), 0u);
  ASSERT_EQ(changes.size(), 4u);
  EXPECT_EQ(changes[1], std::make_pair(2u, uint64_t{200}));
  EXPECT_EQ(changes.back(), std::make_pair(0u, uint64_t{0}));
}

TEST(SessionStoreTest, EnforcesByteBudgetAndNamesFreeBytes) {
  SessionStore store(10, 1000);
  auto a = store.Acquire("a", 700);
  ASSERT_TRUE(a.ok());
  auto b = store.Acquire("b", 301);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(b.status().message().find("only 300"), std::string::npos) << b.status();
  auto c = store.Acquire("c", 300);
  EXPECT_TRUE(c.ok());
  EXPECT_EQ(store.bytes_in_use(), 1000u);
  // A single session larger than the whole budget is refused too.
  SessionStore small(10, 10);
  EXPECT_EQ(small.Acquire("x", 11).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(SessionStoreTest, RejectsDuplicateAndEmptyIds) {
  SessionStore store(10, 1000);
  auto a = store.Acquire("a", 1);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(store.Acquire("a", 1).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store.Acquire("", 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.active(), 1u);
}

TEST(SessionStoreTest, MovedLeaseReleasesOnce) {
  SessionStore store(10, 1000);
  Lease outer;
  {
    auto a = store.Acquire("a", 10);
    ASSERT_TRUE(a.ok());
    Lease moved = std::move(*a);
    outer = std::move(moved);
    EXPECT_EQ(store.active(), 1u);
  }
  EXPECT_EQ(store.active(), 1u);  // still held by `outer`
  EXPECT_EQ(outer.id(), "a");
  outer = Lease();
  EXPECT_EQ(store.active(), 0u);
  EXPECT_EQ(store.bytes_in_use(), 0u);
}

TEST(SessionStoreTest, ConcurrentAcquireNeverExceedsLimits) {
  SessionStore store(3, 1 << 20);
  std::atomic<int> max_seen{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        auto l = store.Acquire(std::to_string(t) + "-" + std::to_string(i), 1);
        if (l.ok()) {
          int seen = static_cast<int>(store.active());
          int prev = max_seen.load();
          while (seen > prev && !max_seen.compare_exchange_weak(prev, seen)) {
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(max_seen.load(), 3);
  EXPECT_GE(max_seen.load(), 1);
  EXPECT_EQ(store.active(), 0u);
  EXPECT_EQ(store.bytes_in_use(), 0u);
}

}  // namespace
}  // namespace kvstream::cloud
