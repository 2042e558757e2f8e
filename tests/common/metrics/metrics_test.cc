#include "common/metrics/metrics.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "tests/support/http_get.h"

namespace kvstream::metrics {
namespace {

TEST(MetricsServerTest, ServesRegistryTextOnGetMetrics) {
  MetricsServer m;
  auto& c = prometheus::BuildCounter()
                .Name("kvstream_test_events_total")
                .Help("Test events")
                .Register(m.registry());
  c.Add({{"kind", "a"}}).Increment(3);
  ASSERT_TRUE(m.Start("127.0.0.1:0").ok());
  ASSERT_GT(m.port(), 0);
  const auto r = testing::HttpGet(m.port(), "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("# TYPE kvstream_test_events_total counter"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("kvstream_test_events_total{kind=\"a\"} 3"), std::string::npos) << r.body;
  EXPECT_EQ(r.body, m.Text());
  // Updates show on the next scrape.
  c.Add({{"kind", "a"}}).Increment();
  EXPECT_NE(
      testing::HttpGet(m.port(), "/metrics").body.find("kvstream_test_events_total{kind=\"a\"} 4"),
      std::string::npos);
}

TEST(MetricsServerTest, OtherPathsAre404) {
  MetricsServer m;
  ASSERT_TRUE(m.Start("127.0.0.1:0").ok());
  EXPECT_EQ(testing::HttpGet(m.port(), "/").status, 404);
  EXPECT_EQ(testing::HttpGet(m.port(), "/metricsx").status, 404);
}

// A loopback connection to `port`, or -1.
int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const timeval limit{5, 0};  // no read in this test may hang it
  if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
  if (fd >= 0) ::close(fd);
  return -1;
}

TEST(MetricsServerTest, SlowAndSilentClientsDoNotBlockScrapes) {
  MetricsServer m;
  ASSERT_TRUE(m.Start("127.0.0.1:0").ok());
  // Ten clients that connect and say nothing, and one that trickles a request a byte
  // every 300 ms (so each read arrives well inside any per-read timeout).
  std::vector<int> silent;
  for (int i = 0; i < 10; ++i) silent.push_back(Connect(m.port()));
  const int trickler = Connect(m.port());
  ASSERT_GE(trickler, 0);
  std::atomic<bool> cut{false};
  std::atomic<double> cut_after{0};
  std::thread trickle([&] {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    for (char ch : req) {
      if (::send(trickler, &ch, 1, MSG_NOSIGNAL) != 1) break;
      pollfd p{trickler, POLLIN, 0};
      if (::poll(&p, 1, 300) > 0) {  // the server closed it
        char buf[64];
        if (::recv(trickler, buf, sizeof(buf), 0) <= 0) break;
      }
    }
    cut_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cut = true;
  });
  // Scrapes are answered while those clients hold their connections.
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(testing::HttpGet(m.port(), "/metrics").status, 200);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  }
  EXPECT_FALSE(cut) << "the trickler should still be connected during the scrapes";
  trickle.join();
  // The request would take 36 x 0.3 s = 10.8 s; the server cuts it at its 2 s read limit.
  EXPECT_GT(cut_after, 1.5);
  EXPECT_LT(cut_after, 4.0);
  // The silent ones were closed too (recv sees EOF).
  for (int fd : silent) {
    ASSERT_GE(fd, 0);
    char buf[8];
    EXPECT_EQ(::recv(fd, buf, sizeof(buf), 0), 0);
    ::close(fd);
  }
  ::close(trickler);
}

TEST(MetricsServerTest, BadAddressesAndTakenPortsAreErrors) {
  MetricsServer a;
  EXPECT_EQ(a.Start("nonsense").code(), absl::StatusCode::kInvalidArgument);
  MetricsServer b;
  EXPECT_EQ(b.Start("127.0.0.1:99999").code(), absl::StatusCode::kInvalidArgument);
  MetricsServer c;
  ASSERT_TRUE(c.Start("127.0.0.1:0").ok());
  MetricsServer d;
  const absl::Status taken = d.Start("127.0.0.1:" + std::to_string(c.port()));
  EXPECT_EQ(taken.code(), absl::StatusCode::kUnavailable) << taken;
  MetricsServer off;
  EXPECT_TRUE(off.Start("").ok());
  EXPECT_EQ(off.port(), 0);
}

TEST(MetricsServerTest, BucketLayoutsIncrease) {
  for (const auto& b : {SecondsBuckets(), RatioBuckets()}) {
    ASSERT_GT(b.size(), 5u);
    for (size_t i = 1; i < b.size(); ++i) EXPECT_GT(b[i], b[i - 1]);
  }
}

}  // namespace
}  // namespace kvstream::metrics
