#include "common/metrics/metrics.h"

#include <gtest/gtest.h>

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
