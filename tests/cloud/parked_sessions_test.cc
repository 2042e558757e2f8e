#include "cloud/parked_sessions.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "cloud/session_store.h"

namespace kvstream::cloud {
namespace {

using std::chrono::milliseconds;

// A parked session's state as the cloud keeps it: what it has applied and its lease.
struct State {
  uint64_t chunks = 0;
  Lease lease;
};

std::unique_ptr<State> NewState(SessionStore& store, const std::string& id, uint64_t chunks) {
  auto s = std::make_unique<State>();
  s->chunks = chunks;
  s->lease = std::move(store.Acquire(id, 100).value());
  return s;
}

const auto kAny = [](const State&) { return absl::OkStatus(); };

TEST(ParkedSessionsTest, TakesBackWhatWasParkedWithItsLease) {
  SessionStore store(4, 1000);
  size_t gauge = 99;
  ParkedSessions<State> parked(10, [&](size_t n) { gauge = n; });
  parked.Park("s1", "tenant-a", NewState(store, "s1", 7));
  EXPECT_EQ(parked.size(), 1u);
  EXPECT_EQ(gauge, 1u);
  EXPECT_EQ(store.active(), 1u) << "a parked session keeps its slot";
  auto got = parked.Take("s1", "tenant-a", milliseconds(0), kAny);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)->chunks, 7u);
  EXPECT_EQ(parked.size(), 0u);
  EXPECT_EQ(gauge, 0u);
  EXPECT_EQ(store.active(), 1u) << "the lease travels with the state";
  // Taken once: a second resume of the same session finds nothing.
  auto again = parked.Take("s1", "tenant-a", milliseconds(0), kAny);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(again.status().message().find("send it again from the start"), std::string::npos);
  got->reset();
  EXPECT_EQ(store.active(), 0u);
}

TEST(ParkedSessionsTest, AnotherTenantOrAFailedCheckLeavesItParked) {
  SessionStore store(4, 1000);
  ParkedSessions<State> parked(10);
  parked.Park("s1", "tenant-a", NewState(store, "s1", 3));
  EXPECT_EQ(parked.Take("s1", "tenant-b", milliseconds(0), kAny).status().code(),
            absl::StatusCode::kNotFound);
  auto refused = parked.Take("s1", "tenant-a", milliseconds(0),
                             [](const State&) { return absl::InvalidArgumentError("differs"); });
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parked.size(), 1u);
  EXPECT_TRUE(parked.Take("s1", "tenant-a", milliseconds(0), kAny).ok());
}

TEST(ParkedSessionsTest, ExpiryFreesTheSessionsSlot) {
  SessionStore store(4, 1000);
  ParkedSessions<State> parked(0.6);
  parked.Park("s1", "", NewState(store, "s1", 1));
  std::this_thread::sleep_for(milliseconds(300));
  parked.Park("s2", "", NewState(store, "s2", 1));
  EXPECT_EQ(store.active(), 2u);
  // s1 expires first, s2 about 300 ms later; neither needs another call to go.
  for (int i = 0; i < 100 && store.active() == 2; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(store.active(), 1u);
  EXPECT_EQ(parked.Take("s1", "", milliseconds(0), kAny).status().code(),
            absl::StatusCode::kNotFound);
  for (int i = 0; i < 100 && store.active() == 1; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(store.active(), 0u);
  EXPECT_EQ(parked.size(), 0u);
}

TEST(ParkedSessionsTest, TakeWaitsForAStreamThatHasNotNoticedItsBreak) {
  SessionStore store(4, 1000);
  ParkedSessions<State> parked(10);
  parked.BeginReceiving("s1");  // its stream has not noticed the break yet
  std::thread late([&] {
    std::this_thread::sleep_for(milliseconds(100));
    parked.Park("s1", "", NewState(store, "s1", 5));
  });
  const auto t0 = std::chrono::steady_clock::now();
  auto got = parked.Take("s1", "", std::chrono::seconds(5), kAny);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  late.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)->chunks, 5u);
  EXPECT_LT(waited, 2.0) << "woken by the park, not the wait's end";
  // Neither receiving nor parked: NOT_FOUND at once, not after the wait.
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(parked.Take("s9", "", std::chrono::seconds(5), kAny).status().code(),
            absl::StatusCode::kNotFound);
  // Receiving, then committed (not parked): the wait ends with it.
  parked.BeginReceiving("s8");
  std::thread commit([&] {
    std::this_thread::sleep_for(milliseconds(100));
    parked.EndReceiving("s8");
  });
  EXPECT_EQ(parked.Take("s8", "", std::chrono::seconds(5), kAny).status().code(),
            absl::StatusCode::kNotFound);
  commit.join();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), 2.0);
}

TEST(ParkedSessionsTest, LiveWorkEvictsTheOldestParkedSession) {
  SessionStore store(4, 1000);
  ParkedSessions<State> parked(60);
  parked.Park("a1", "tenant-a", NewState(store, "a1", 1));
  parked.Park("b1", "tenant-b", NewState(store, "b1", 1));
  parked.Park("a2", "tenant-a", NewState(store, "a2", 1));
  const std::string b = "tenant-b", c = "tenant-c";
  EXPECT_FALSE(parked.EvictOldest(&c));
  EXPECT_TRUE(parked.EvictOldest(&b));
  EXPECT_EQ(parked.Take("b1", "tenant-b", milliseconds(0), kAny).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(parked.EvictOldest(nullptr));  // a1, the oldest left
  EXPECT_EQ(store.active(), 1u);
  EXPECT_TRUE(parked.Take("a2", "tenant-a", milliseconds(0), kAny).ok());
  EXPECT_FALSE(parked.EvictOldest(nullptr));
}

TEST(ParkedSessionsTest, ParkingTheSameIdAgainDropsTheOlderState) {
  SessionStore store(4, 1000);
  ParkedSessions<State> parked(10);
  parked.Park("s1", "", NewState(store, "s1", 1));
  auto newer = std::make_unique<State>();
  newer->chunks = 2;
  parked.Park("s1", "", std::move(newer));
  EXPECT_EQ(store.active(), 0u) << "the older state's lease went with it";
  EXPECT_EQ((*parked.Take("s1", "", milliseconds(0), kAny))->chunks, 2u);
}

TEST(ParkedSessionsTest, DestructionDropsWhatIsParked) {
  SessionStore store(4, 1000);
  {
    ParkedSessions<State> parked(60);
    parked.Park("s1", "", NewState(store, "s1", 1));
    EXPECT_EQ(store.active(), 1u);
  }
  EXPECT_EQ(store.active(), 0u);
}

}  // namespace
}  // namespace kvstream::cloud
