#include "common/net/peer_limit.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace kvstream::net {
namespace {

TEST(PeerLimiterTest, HostStripsSchemeAndPort) {
  EXPECT_EQ(PeerLimiter::Host("ipv4:10.1.2.3:51234"), "10.1.2.3");
  EXPECT_EQ(PeerLimiter::Host("ipv6:[::1]:443"), "::1");
  EXPECT_EQ(PeerLimiter::Host("ipv6:[fe80::1%eth0]:9"), "fe80::1%eth0");
  EXPECT_EQ(PeerLimiter::Host("unix:/tmp/sock"), "unix:/tmp/sock");
}

TEST(PeerLimiterTest, CapsEachHostAndReleasesOnDestruction) {
  PeerLimiter limiter(2, "--max_streams_per_peer");
  std::vector<PeerLimiter::Hold> held;
  for (const char* port : {"1000", "1001"}) {
    auto h = limiter.Acquire(std::string("ipv4:10.0.0.1:") + port);
    ASSERT_TRUE(h.ok()) << h.status();
    held.push_back(std::move(*h));
  }
  // A third call from the same host on another port is refused, with the limit named.
  auto third = limiter.Acquire("ipv4:10.0.0.1:1002");
  ASSERT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("10.0.0.1 already has 2 calls open"), std::string::npos)
      << third.status();
  EXPECT_NE(third.status().message().find("--max_streams_per_peer"), std::string::npos);
  // Another host is not affected.
  EXPECT_TRUE(limiter.Acquire("ipv4:10.0.0.2:1000").ok());
  EXPECT_EQ(limiter.open("ipv4:10.0.0.2:7"), 0) << "its hold was a temporary, released";
  EXPECT_EQ(limiter.open("ipv4:10.0.0.1:7"), 2);
  // Moving a hold keeps one place; destroying it frees the place.
  PeerLimiter::Hold moved = std::move(held[0]);
  EXPECT_EQ(limiter.open("ipv4:10.0.0.1:7"), 2);
  held.clear();
  EXPECT_EQ(limiter.open("ipv4:10.0.0.1:7"), 1);
  moved = PeerLimiter::Hold();
  EXPECT_EQ(limiter.open("ipv4:10.0.0.1:7"), 0);
  EXPECT_TRUE(limiter.Acquire("ipv4:10.0.0.1:1003").ok());
}

TEST(PeerLimiterTest, ZeroMeansNoCap) {
  PeerLimiter limiter(0, "--max_streams_per_peer");
  std::vector<PeerLimiter::Hold> held;
  for (int i = 0; i < 1000; ++i) {
    auto h = limiter.Acquire("ipv4:10.0.0.1:1");
    ASSERT_TRUE(h.ok());
    held.push_back(std::move(*h));
  }
}

}  // namespace
}  // namespace kvstream::net
