#include "common/net/shaper.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kvstream::net {
namespace {

TEST(LinkTraceTest, ConstantRate) {
  const LinkTrace t = LinkTrace::Constant(8);  // 1 MB/s
  EXPECT_DOUBLE_EQ(t.TransmitEnd(0, 1000000), 1.0);
  EXPECT_DOUBLE_EQ(t.TransmitEnd(2.5, 500000), 3.0);
  EXPECT_TRUE(std::isinf(LinkTrace::Constant(0).TransmitEnd(0, 1)));
}

TEST(LinkTraceTest, TraceWithOutageRepeats) {
  // 8 Mbit/s for 1 s, outage 1-2 s, 16 Mbit/s from 2 s; period 2 + 2/2 = 3 s.
  auto t = LinkTrace::Parse("0 8\n1 0\n2 16\n", "test");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_DOUBLE_EQ(t->period(), 3.0);
  EXPECT_DOUBLE_EQ(t->RateAt(0.5), 8);
  EXPECT_DOUBLE_EQ(t->RateAt(1.5), 0);
  EXPECT_DOUBLE_EQ(t->RateAt(2.5), 16);
  EXPECT_DOUBLE_EQ(t->RateAt(3.5), 8);  // repeats
  // 1.5 MB from 0: 1 MB in the first second, the outage, 0.5 MB at 2 MB/s.
  EXPECT_DOUBLE_EQ(t->TransmitEnd(0, 1500000), 2.25);
  // Starting inside the outage waits for it to end.
  EXPECT_DOUBLE_EQ(t->TransmitEnd(1.2, 200000), 2.1);
  // Across the wrap: 2 MB/s until 3 s, then 1 MB/s.
  EXPECT_DOUBLE_EQ(t->TransmitEnd(2.5, 1500000), 3.5);
}

TEST(LinkTraceTest, ParseErrorsNameTheLine) {
  auto bad = LinkTrace::Parse("0 10\n1 x\n", "trace.txt");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("trace.txt:2"), std::string::npos) << bad.status();
  EXPECT_FALSE(LinkTrace::Parse("0 10\n0 5\n", "t").ok());
  EXPECT_FALSE(LinkTrace::Parse("0 -1\n", "t").ok());
  EXPECT_FALSE(LinkTrace::Parse("# only a comment\n", "t").ok());
  EXPECT_TRUE(LinkTrace::Parse("# header\n5 10\n6 20\n", "t").ok());  // shifted to start at 0
  EXPECT_EQ(LinkTrace::Load("/nonexistent/trace").status().code(), absl::StatusCode::kNotFound);
}

TEST(ShaperTest, SerialFifoOnVirtualTime) {
  double now = 0;
  Shaper s(
      LinkTrace::Constant(8), 0.05, [&] { return now; },
      [&](double d) { now += std::max(0.0, d); });
  EXPECT_DOUBLE_EQ(s.Transmit(500000), 0.5);
  EXPECT_DOUBLE_EQ(now, 0.5);
  now += 1.0;  // the link idles
  EXPECT_DOUBLE_EQ(s.Transmit(250000), 0.25);
  EXPECT_DOUBLE_EQ(now, 1.75);
  s.Delay();
  EXPECT_DOUBLE_EQ(now, 1.80);
}

TEST(ShaperTest, BackToBackSendsQueue) {
  double now = 0;
  std::vector<double> sleeps;
  // Sleep records but does not advance: two senders reserve the link at the same instant.
  Shaper s(
      LinkTrace::Constant(8), 0, [&] { return now; }, [&](double d) { sleeps.push_back(d); });
  s.Transmit(1000000);
  s.Transmit(1000000);
  ASSERT_EQ(sleeps.size(), 2u);
  EXPECT_DOUBLE_EQ(sleeps[0], 1.0);
  EXPECT_DOUBLE_EQ(sleeps[1], 2.0);  // waits for the first to finish crossing
}

}  // namespace
}  // namespace kvstream::net
