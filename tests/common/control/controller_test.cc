#include "common/control/controller.h"

#include <gtest/gtest.h>

#include <tuple>

#include "absl/strings/str_cat.h"

namespace kvstream::control {
namespace {

// A 2-layer scout with one KV head of width 4; a 101-token prompt, 80 of them context.
const ModelShape kScout{2, 1, 4};
const RequestShape kRequest{101, 80};

Rates TestRates() {
  Rates r;
  r.edge_prefill = PrefillCost::FromRate(1000);
  r.edge_encode_bytes = 2e9;
  r.cloud_prefill = PrefillCost::FromRate(500);
  r.cloud_decode = 50;
  r.kv_decode = 100;
  r.rebuild_bytes = 1e9;
  return r;
}

OperatingPoint Point(Mode mode, const std::string& spec, double quality,
                     select::Policy sel = select::Policy::kFull, double retention = 1) {
  OperatingPoint p;
  p.mode = mode;
  p.spec = spec;
  p.quality = quality;
  p.selector = sel;
  p.retention = retention;
  return p;
}

TEST(ControllerTest, PredictsKvInt8ByHand) {
  // 100 cached slots; INT8 per token at width 4: 4 data bytes + fp16 scale and offset.
  const double payload = 2 /*layers*/ * 2 /*K,V*/ * 100 * (4 + 4);
  const double wire = payload + 4 * 100 + 256;
  const double expected =
      100 / 1000.0 + payload / 2e9 + 0.1 + wire * 8 / 1e6 + payload / 1e9 + 1 / 100.0;
  auto p =
      Predict(Point(kvstream::v1::MODE_KV, "int8", 0.8), kRequest, kScout, TestRates(), {1e6, 0.1});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->wire_bytes, static_cast<uint64_t>(wire));
  EXPECT_NEAR(p->ttft_seconds, expected, 1e-12);
}

// Layer-wise sending makes the edge's work and the transfer a two-stage pipeline of L
// layers; a selection still waits for every layer's statistics.
TEST(ControllerTest, LayerwiseSendingOverlapsComputeAndTransfer) {
  Rates rates = TestRates();
  rates.layerwise = true;
  const double payload = 2 * 2 * 100 * (4 + 4), wire = payload + 4 * 100 + 256;
  const double edge = 100 / 1000.0 + payload / 2e9;
  const double transfer = 0.1 + wire * 8 / 1e6;
  const double cloud = payload / 1e9 + 1 / 100.0;
  auto p = Predict(Point(kvstream::v1::MODE_KV, "int8", 0.8), kRequest, kScout, rates, {1e6, 0.1});
  ASSERT_TRUE(p.ok()) << p.status();
  // Two layers: the first goes after half the edge's work, the second after all of it.
  EXPECT_NEAR(p->ttft_seconds, std::max(edge + transfer / 2, edge / 2 + transfer) + cloud, 1e-12);
  EXPECT_LT(p->ttft_seconds, edge + transfer + cloud);
  auto selected = Predict(Point(kvstream::v1::MODE_KV, "int8", 0.8, select::Policy::kQ2C, 0.5),
                          kRequest, kScout, rates, {1e6, 0.1});
  ASSERT_TRUE(selected.ok()) << selected.status();
  EXPECT_NEAR(selected->ttft_seconds,
              selected->edge_seconds + selected->transfer_seconds + selected->cloud_seconds, 1e-12);
}

TEST(ControllerTest, PredictsProjectedByHand) {
  // As kv INT8, plus mapping 100 slots at 20,000 slots/s, and the answering model's first
  // decode step (50/s) instead of the scout's.
  Rates r = TestRates();
  r.projection = 20000;
  const double payload = 2 * 2 * 100 * (4 + 4);
  const double wire = payload + 4 * 100 + 256;
  const double expected = 100 / 1000.0 + payload / 2e9 + 0.1 + wire * 8 / 1e6 + payload / 1e9 +
                          100 / 20000.0 + 1 / 50.0;
  auto p =
      Predict(Point(kvstream::v1::MODE_PROJECTED, "int8", 0.8), kRequest, kScout, r, {1e6, 0.1});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->wire_bytes, static_cast<uint64_t>(wire));
  EXPECT_NEAR(p->ttft_seconds, expected, 1e-12);
  EXPECT_EQ(Point(kvstream::v1::MODE_PROJECTED, "int8", 0.8).label(), "projected full int8");
}

TEST(ControllerTest, PredictsTextAndScoutByHand) {
  const double ids = 3 * 101 + 64;
  auto text =
      Predict(Point(kvstream::v1::MODE_TEXT, "", 0.9), kRequest, kScout, TestRates(), {1e6, 0.1});
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->wire_bytes, static_cast<uint64_t>(ids));
  EXPECT_NEAR(text->ttft_seconds, 0.1 + ids * 8 / 1e6 + 100 / 500.0 + 1 / 50.0, 1e-12);
  // Scout at 50%: 40 of 80 context tokens kept, 60 slots; the edge prefills first.
  auto scout = Predict(Point(kvstream::v1::MODE_SCOUT, "", 0.85, select::Policy::kQ2C, 0.5),
                       kRequest, kScout, TestRates(), {1e6, 0.1});
  ASSERT_TRUE(scout.ok());
  EXPECT_EQ(scout->wire_bytes, static_cast<uint64_t>(ids + 2 * 60));
  EXPECT_NEAR(scout->ttft_seconds, 0.1 + 0.1 + (ids + 120) * 8 / 1e6 + 0.2 + 0.02, 1e-12);
}

TEST(ControllerTest, SelectingPointsPayForStatisticsAtTheEdge) {
  Rates r = TestRates();
  r.edge_prefill_stats = PrefillCost::FromRate(500);  // half the plain rate
  auto full = Predict(Point(kvstream::v1::MODE_KV, "int4", 0.8), kRequest, kScout, r, {1e9, 0});
  auto half = Predict(Point(kvstream::v1::MODE_KV, "int4", 0.8, select::Policy::kQ2C, 0.5),
                      kRequest, kScout, r, {1e9, 0});
  ASSERT_TRUE(full.ok() && half.ok());
  EXPECT_NEAR(full->edge_seconds, 100 / 1000.0 + 2400 / 2e9, 1e-12);
  EXPECT_NEAR(half->edge_seconds, 100 / 500.0 + 1440 / 2e9, 1e-12);
  // On a fast link the cheaper transfer does not pay for the statistics.
  auto d = Choose({Point(kvstream::v1::MODE_KV, "int4", 0.8),
                   Point(kvstream::v1::MODE_KV, "int4", 0.8, select::Policy::kQ2C, 0.5)},
                  kRequest, kScout, r, {1e9, 0}, 0, 0);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->point.selector, select::Policy::kFull);
}

TEST(PrefillCostTest, FitsLinearAndQuadraticTermsThroughTwoTimings) {
  // 1 ms/token plus 2 us/token^2: 100 tokens take 0.12 s, 400 take 0.72 s.
  auto c = PrefillCost::Fit(100, 0.12, 400, 0.72);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NEAR(c->linear(), 1e-3, 1e-12);
  EXPECT_NEAR(c->quadratic(), 2e-6, 1e-15);
  EXPECT_NEAR(c->Seconds(200), 0.2 + 0.08, 1e-12);
  // A rate taken at one length alone misprices another: 100 tokens at 0.12 s priced
  // linearly puts 400 tokens at 0.48 s, not 0.72 s.
  EXPECT_NEAR(PrefillCost::FromRate(100 / 0.12).Seconds(400), 0.48, 1e-12);
}

TEST(PrefillCostTest, NoisyTimingsFallBackToOneTerm) {
  // Per-token time falling with length (noise): least-squares line through both.
  auto lin = PrefillCost::Fit(100, 0.2, 200, 0.3);
  ASSERT_TRUE(lin.ok());
  EXPECT_EQ(lin->quadratic(), 0);
  EXPECT_NEAR(lin->linear(), (0.2 * 100 + 0.3 * 200) / (100.0 * 100 + 200.0 * 200), 1e-15);
  // Steeper than quadratic: the linear term would be negative; quadratic alone.
  auto quad = PrefillCost::Fit(100, 0.01, 200, 0.1);
  ASSERT_TRUE(quad.ok());
  EXPECT_EQ(quad->linear(), 0);
  EXPECT_GT(quad->quadratic(), 0);
  for (auto [n1, t1, n2, t2] :
       {std::tuple{0, 1.0, 10, 1.0}, {10, 1.0, 10, 2.0}, {10, 0.0, 20, 1.0}, {10, 1.0, 20, -1.0}}) {
    EXPECT_EQ(PrefillCost::Fit(n1, t1, n2, t2).status().code(), absl::StatusCode::kInvalidArgument)
        << n1 << " " << n2;
  }
  EXPECT_FALSE(PrefillCost().known());
  EXPECT_FALSE(PrefillCost::FromRate(0).known());
  EXPECT_EQ(PrefillCost().Seconds(1000), 0);
}

TEST(PrefillCostTest, ObservedPrefillsMoveTheScale) {
  PrefillCost c = PrefillCost::FromRate(1000);  // 1 ms/token
  c.Observe(100, 0.2);                          // took twice the model: 0.75 + 0.25 * 2
  EXPECT_NEAR(c.scale(), 1.25, 1e-12);
  EXPECT_NEAR(c.Seconds(100), 0.125, 1e-12);
  c.Observe(100, 1000.0);  // a stall counts as 10x at most
  EXPECT_NEAR(c.scale(), 0.75 * 1.25 + 0.25 * 10, 1e-12);
  for (int i = 0; i < 60; ++i) c.Observe(50, 0.05);  // back to the model
  EXPECT_NEAR(c.scale(), 1.0, 1e-6);
  c.Observe(0, 1.0);  // nothing to compare with: ignored
  c.Observe(10, 0.0);
  EXPECT_NEAR(c.scale(), 1.0, 1e-6);
}

TEST(ControllerTest, LongerPromptsMakeSelectionDearer) {
  // Statistics cost grows with the square of the prompt: at 101 tokens selecting wins on
  // a slow link; at ten times the length the same link no longer pays for it.
  Rates r = TestRates();
  r.edge_prefill = PrefillCost::FromRate(1000);
  auto stats = PrefillCost::Fit(100, 0.2, 1000, 20.0);  // 2e-5 * n^2 seconds
  ASSERT_TRUE(stats.ok());
  r.edge_prefill_stats = *stats;
  const std::vector<OperatingPoint> points = {
      Point(kvstream::v1::MODE_KV, "int4", 0.8),
      Point(kvstream::v1::MODE_KV, "int4", 0.8, select::Policy::kSnapKV, 0.5)};
  auto short_slow = Choose(points, kRequest, kScout, r, {1e4, 0}, 0, 0);
  auto long_slow = Choose(points, {1001, 980}, kScout, r, {1e4, 0}, 0, 0);
  ASSERT_TRUE(short_slow.ok() && long_slow.ok());
  EXPECT_EQ(short_slow->point.selector, select::Policy::kSnapKV);
  // 1000 tokens: statistics take 20 s against 1 s plain; keeping 510 of 1000 slots
  // saves 13,720 wire bytes, 11 s at 10 kbit/s: not enough.
  EXPECT_EQ(long_slow->point.selector, select::Policy::kFull);
  EXPECT_NEAR(long_slow->prediction.edge_seconds, 1.0 + 2 * 2 * 1000 * 6 / 2e9, 1e-9);
}

TEST(ControllerTest, CloudPrefillGrowsWithTheSquareOfThePrompt) {
  // The cloud's prefill fitted through 128 tokens in 10 ms and 512 in 80 ms: the linear
  // rate at 128 tokens (12,800 tokens/s) would price 1,000 tokens at 78 ms; the fit says
  // a*n + b*n^2 with a = 5.2083e-5, b = 2.0345e-7, i.e. 255 ms.
  Rates r = TestRates();
  auto cloud = PrefillCost::Fit(128, 0.010, 512, 0.080);
  ASSERT_TRUE(cloud.ok());
  r.cloud_prefill = *cloud;
  auto text = Predict(Point(kvstream::v1::MODE_TEXT, "", 0.9), {1001, 980}, kScout, r, {1e9, 0});
  ASSERT_TRUE(text.ok());
  const double b = (0.080 / 512 - 0.010 / 128) / (512 - 128), a = 0.010 / 128 - b * 128;
  EXPECT_NEAR(text->cloud_seconds, a * 1000 + b * 1000 * 1000 + 1 / 50.0, 1e-12);
  EXPECT_GT(text->cloud_seconds, 0.25);
  // Observed answers move the scale: prefills twice as slow as the fit double the price
  // after enough samples.
  for (int i = 0; i < 60; ++i) r.cloud_prefill.Observe(512, 0.160);
  auto slower = Predict(Point(kvstream::v1::MODE_TEXT, "", 0.9), {1001, 980}, kScout, r, {1e9, 0});
  ASSERT_TRUE(slower.ok());
  EXPECT_NEAR(slower->cloud_seconds - 1 / 50.0, 2 * (text->cloud_seconds - 1 / 50.0), 1e-6);
}

TEST(ControllerTest, SelectionShrinksKvBytes) {
  auto full =
      Predict(Point(kvstream::v1::MODE_KV, "int4", 0.8), kRequest, kScout, TestRates(), {1e6, 0});
  auto half = Predict(Point(kvstream::v1::MODE_KV, "int4", 0.7, select::Policy::kSnapKV, 0.5),
                      kRequest, kScout, TestRates(), {1e6, 0});
  ASSERT_TRUE(full.ok() && half.ok());
  // INT4 at width 4: 2 data bytes + 4 of scale/offset per slot; 100 vs 60 slots.
  EXPECT_EQ(full->wire_bytes, 2u * 2 * 100 * 6 + 4 * 100 + 256);
  EXPECT_EQ(half->wire_bytes, 2u * 2 * 60 * 6 + 4 * 60 + 256);
}

TEST(ControllerTest, ChoosesBestQualityWithinTheTarget) {
  const std::vector<OperatingPoint> points = {Point(kvstream::v1::MODE_TEXT, "", 0.9),
                                              Point(kvstream::v1::MODE_KV, "int8", 0.8),
                                              Point(kvstream::v1::MODE_KV, "raw", 0.8)};
  const Rates r = TestRates();
  // text: 0.3229 s, kv int8: 0.2409 s, kv raw: 0.2665 s.
  auto d = Choose(points, kRequest, kScout, r, {1e6, 0.1}, 0.3, 0);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->point.label(), "kv full int8") << "raw has the same quality but a higher TTFT";
  d = Choose(points, kRequest, kScout, r, {1e6, 0.1}, 0.5, 0);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->point.mode, kvstream::v1::MODE_TEXT) << "text meets 0.5 s and has the best quality";
  // Nothing meets 0.1 s: lowest TTFT above the floor.
  d = Choose(points, kRequest, kScout, r, {1e6, 0.1}, 0.1, 0.85);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->point.mode, kvstream::v1::MODE_TEXT);
  EXPECT_NE(d->reason.find("none meets the target"), std::string::npos) << d->reason;
  // A floor nobody reaches: lowest TTFT of all.
  d = Choose(points, kRequest, kScout, r, {1e6, 0.1}, 0, 0.95);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->point.label(), "kv full int8");
}

TEST(ControllerTest, SlowLinksFavourText) {
  const std::vector<OperatingPoint> points = {Point(kvstream::v1::MODE_TEXT, "", 0.8),
                                              Point(kvstream::v1::MODE_KV, "int8", 0.8)};
  // At 10 kbit/s the 3856-byte cache takes 3.1 s, the 367 bytes of ids 0.29 s.
  auto d = Choose(points, kRequest, kScout, TestRates(), {1e4, 0.1}, 0, 0.5);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->point.mode, kvstream::v1::MODE_TEXT);
  EXPECT_NEAR(d->prediction.ttft_seconds, 0.1 + 367 * 8 / 1e4 + 0.2 + 0.02, 1e-12);
  // At 1 Gbit/s skipping the large model's prefill wins.
  d = Choose(points, kRequest, kScout, TestRates(), {1e9, 0.001}, 0, 0.5);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->point.mode, kvstream::v1::MODE_KV);
}

TEST(ControllerTest, BadInputsAreErrors) {
  EXPECT_FALSE(
      Predict(Point(kvstream::v1::MODE_KV, "int8", 1), kRequest, kScout, TestRates(), {0, 0}).ok());
  EXPECT_FALSE(
      Predict(Point(kvstream::v1::MODE_KV, "int8", 1), {10, 10}, kScout, TestRates(), {1e6, 0})
          .ok());
  EXPECT_FALSE(Predict(Point(kvstream::v1::MODE_KV, "int4,L5=f16", 1), kRequest, kScout,
                       TestRates(), {1e6, 0})
                   .ok());
  EXPECT_EQ(Choose({}, kRequest, kScout, TestRates(), {1e6, 0}, 0, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ControllerTest, ReplanMovesDownTheLadderOnlyAsFarAsNeeded) {
  const std::vector<std::string> ladder = {"raw", "int8", "int4", "int2"};
  // 3 layers left, 100 slots, 1 head of width 4: per layer K+V at raw f32 = 2 x 1600 bytes,
  // int8 = 2 x 800, int4 = 2 x 600, int2 = 2 x 500.
  auto at = [&](int current, double bps, double secs) {
    return ReplanRung(ladder, current, 3, 100, kScout, bps, secs).value();
  };
  EXPECT_EQ(at(0, 1e6, 1.0), 0);    // 9600 B = 0.0768 s fits
  EXPECT_EQ(at(0, 1e6, 0.05), 1);   // raw 0.0768 s no; int8 4800 B = 0.0384 s
  EXPECT_EQ(at(0, 1e6, 0.035), 2);  // int4 3600 B = 0.0288 s
  EXPECT_EQ(at(0, 1e6, 0.025), 3);  // int2 3000 B = 0.024 s
  EXPECT_EQ(at(0, 1e6, 0.001), 3);  // nothing fits: the cheapest
  EXPECT_EQ(at(2, 1e9, 10), 2) << "never moves back up";
  EXPECT_FALSE(ReplanRung(ladder, 4, 3, 100, kScout, 1e6, 1).ok());
  EXPECT_FALSE(ReplanRung(ladder, 0, 3, 100, kScout, 0, 1).ok());
}

TEST(LinkEstimatorTest, HarmonicMeanAndMinimumRtt) {
  LinkEstimator e(3);
  EXPECT_FALSE(e.has_bandwidth());
  e.AddThroughputSample(1000, 1.0);   // 8 kbit/s
  e.AddThroughputSample(1000, 0.25);  // 32 kbit/s
  EXPECT_NEAR(e.bandwidth_bps(), 2.0 / (1 / 8000.0 + 1 / 32000.0), 1e-9);
  e.AddThroughputSample(1000, 0.5);
  e.AddThroughputSample(1000, 0.5);  // the 8 kbit/s sample leaves the window of 3
  EXPECT_NEAR(e.bandwidth_bps(), 3.0 / (1 / 32000.0 + 2 / 16000.0), 1e-9);
  e.AddThroughputSample(0, 1);  // ignored
  e.AddThroughputSample(10, 0);
  EXPECT_NEAR(e.bandwidth_bps(), 3.0 / (1 / 32000.0 + 2 / 16000.0), 1e-9);
  e.AddRttSample(0.2);
  e.AddRttSample(0.05);
  e.AddRttSample(0.1);
  EXPECT_DOUBLE_EQ(e.rtt_seconds(), 0.05);
}

TEST(LinkEstimatorTest, AckGapSamplesSkipTheFirstChunkAndUnackedOnes) {
  LinkEstimator e(8);
  // Chunk 1 waits for chunk 0's ack (1.0) and is acked at 1.5: 1000 B in 0.5 s. Chunk 2
  // is sent after that ack, at 2.0, and acked at 2.25: 1000 B in 0.25 s. Chunk 3 has no
  // ack yet.
  AddAckGapSamples(e, {5000, 1000, 1000, 1000}, {0, 0.2, 2.0, 2.1}, {1.0, 1.5, 2.25, -1});
  ASSERT_TRUE(e.has_bandwidth());
  EXPECT_NEAR(e.bandwidth_bps(), 2.0 / (0.5 / 8000 + 0.25 / 8000), 1e-9);
  LinkEstimator none;
  AddAckGapSamples(none, {1000, 1000}, {0, 0.1}, {-1, 0.5});  // chunk 0 unacked: no gap
  EXPECT_FALSE(none.has_bandwidth());
}

TEST(QualityTableTest, RowsFromSeveralKindsKeepTheLowestQuality) {
  auto t = ParseQualityTable(R"([
    {"mode": "kv", "spec": "int2", "quality": 1.0, "kind": "needle"},
    {"mode": "kv", "spec": "int2", "quality": 0.6, "kind": "single"},
    {"mode": "kv", "spec": "int4", "quality": 0.97, "kind": "single"},
    {"mode": "kv", "spec": "int4", "quality": 1.0, "kind": "needle"},
    {"mode": "kv", "selector": "q2c", "retention": 0.5, "spec": "int2", "quality": 0.9,
     "kind": "needle"},
    {"mode": "text", "quality": 1.0, "kind": "needle"}])",
                             "t.json");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 4u);
  EXPECT_EQ((*t)[0].spec, "int2");
  EXPECT_DOUBLE_EQ((*t)[0].quality, 0.6);
  EXPECT_EQ((*t)[1].spec, "int4");
  EXPECT_DOUBLE_EQ((*t)[1].quality, 0.97);
  EXPECT_EQ((*t)[2].selector, select::Policy::kQ2C) << "another selection is another point";
  EXPECT_DOUBLE_EQ((*t)[2].quality, 0.9);
  auto bad = ParseQualityTable(R"([{"mode": "text", "quality": 1, "kind": 3}])", "t.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("t.json[0]: kind"), std::string::npos) << bad.status();
}

// Rows measured over stated prompt lengths: a request is priced by the rows of each
// kind whose range holds its length, or else by the nearest range; rows without a range
// apply everywhere; the kinds' lowest is the point's quality.
TEST(QualityTableTest, RowsWithLengthRangesPriceAPromptByTheRangeThatAppliesPerKind) {
  auto t = ParseQualityTable(R"([
    {"mode": "kv", "spec": "int4", "quality": 1.0, "kind": "needle", "tokens": [400, 600]},
    {"mode": "kv", "spec": "int4", "quality": 0.9, "kind": "needle", "tokens": [900, 1150]},
    {"mode": "kv", "spec": "int4", "quality": 0.95, "kind": "single", "tokens": [330, 500]},
    {"mode": "kv", "spec": "int4", "quality": 0.6, "kind": "single", "tokens": [850, 1100]},
    {"mode": "text", "quality": 0.8, "kind": "single", "tokens": [850, 1100]},
    {"mode": "text", "quality": 1.0}])",
                             "t.json");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_DOUBLE_EQ((*t)[0].quality, 0.6) << "no length known: the lowest row";
  EXPECT_EQ((*t)[0].bands.size(), 4u);
  auto at = [&](int n, size_t point) { return AtPromptLength(*t, n)[point].quality; };
  EXPECT_DOUBLE_EQ(at(450, 0), 0.95);  // needle 1.0 and single 0.95 hold 450
  EXPECT_DOUBLE_EQ(at(550, 0), 0.95);  // single's nearest range is [330, 500]
  EXPECT_DOUBLE_EQ(at(300, 0), 0.95);  // below every range: the nearest per kind
  EXPECT_DOUBLE_EQ(at(1000, 0), 0.6);
  // 720: needle's nearest range is [400, 600] (1.0), single's [850, 1100] (0.6).
  EXPECT_DOUBLE_EQ(at(720, 0), 0.6);
  // A row without a range applies at every length, beside the kinds' own rows.
  EXPECT_DOUBLE_EQ(at(1000, 1), 0.8);
  EXPECT_DOUBLE_EQ(at(450, 1), 0.8) << "single's only text row is the nearest one";
  EXPECT_DOUBLE_EQ((*t)[1].quality, 0.8);
  // The table itself is unchanged.
  EXPECT_DOUBLE_EQ((*t)[0].quality, 0.6);
}

// A projected point's answer check sends a share of answers to the prompt's prefill: the
// table says how many, per row, and the cost model adds that share of the cloud model's
// prefill, and the prompt's ids, to the point's TTFT and bytes.
TEST(QualityTableTest, TheAnswerChecksFallbackShareIsPricedIntoProjectedPoints) {
  auto t = ParseQualityTable(R"([
    {"mode": "projected", "spec": "int2", "quality": 1.0, "kind": "needle",
     "tokens": [400, 600], "answered_from_prompt": 0.1},
    {"mode": "projected", "spec": "int2", "quality": 0.95, "kind": "single",
     "tokens": [330, 500], "answered_from_prompt": 0.35},
    {"mode": "projected", "spec": "int2", "quality": 0.8, "kind": "single",
     "tokens": [850, 1100], "answered_from_prompt": 0.5}])",
                             "t.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_DOUBLE_EQ((*t)[0].fallback_share, 0.5) << "no length known: the highest";
  OperatingPoint p = AtPromptLength(*t, 450)[0];
  EXPECT_DOUBLE_EQ(p.fallback_share, 0.35);
  EXPECT_DOUBLE_EQ(p.quality, 0.95);
  Rates rates;
  rates.cloud_prefill = PrefillCost::FromRate(1000);  // 449 tokens: 0.449 s
  rates.cloud_decode = 100;
  const ModelShape m{4, 2, 24};
  const LinkState link{100e6, 0};
  auto plain = Predict(p, {450, 400}, m, rates, link);
  rates.answer_check = true;
  auto checked = Predict(p, {450, 400}, m, rates, link);
  ASSERT_TRUE(plain.ok() && checked.ok());
  EXPECT_NEAR(checked->cloud_seconds - plain->cloud_seconds, 0.35 * 0.449, 1e-9);
  EXPECT_EQ(checked->wire_bytes - plain->wire_bytes, 3u * 450 + 64);
  p.fallback_share = 0;
  auto agreeing = Predict(p, {450, 400}, m, rates, link);
  EXPECT_NEAR(agreeing->cloud_seconds, plain->cloud_seconds, 1e-12);
  // A kv point's share of answers the edge's confidence gate sends to text costs the
  // cloud's prefill and a round trip, only with the gate on.
  OperatingPoint kv;
  kv.spec = "int4";
  kv.fallback_share = 0.25;
  const LinkState slow{100e6, 0.02};
  auto ungated = Predict(kv, {450, 400}, m, rates, slow);
  rates.kv_confidence_gate = true;
  auto gated = Predict(kv, {450, 400}, m, rates, slow);
  ASSERT_TRUE(ungated.ok() && gated.ok());
  EXPECT_NEAR(gated->cloud_seconds - ungated->cloud_seconds, 0.25 * (0.02 + 0.449), 1e-9);
  EXPECT_EQ(gated->wire_bytes, ungated->wire_bytes);
  auto bad = ParseQualityTable(
      R"([{"mode": "projected", "spec": "int2", "quality": 1, "answered_from_prompt": 2}])", "q");
  EXPECT_NE(bad.status().message().find("q[0]: answered_from_prompt must be a share in [0, 1], "
                                        "found 2"),
            std::string::npos)
      << bad.status();
}

TEST(QualityTableTest, ParsesAndRejectsWithThePlace) {
  auto t = ParseQualityTable(
      R"([{"mode": "text", "quality": 0.1}, {"mode": "kv", "selector": "q2c", "retention": 0.5, "spec": "int4", "quality": 0.55}])",
      "t.json");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[1].label(), "kv q2c@0.50 int4");
  EXPECT_DOUBLE_EQ((*t)[1].quality, 0.55);
  auto bad = ParseQualityTable(R"([{"mode": "kv", "spec": "int9", "quality": 1}])", "t.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("t.json[0]"), std::string::npos) << bad.status();
  // A point's mode is one that answers: the controller itself (adaptive) is not one.
  for (const char* mode : {"fax", "adaptive"}) {
    auto m = ParseQualityTable(absl::StrCat(R"([{"mode": ")", mode, R"(", "quality": 1}])"), "t");
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << mode;
    EXPECT_NE(m.status().message().find(
                  absl::StrCat("t[0]: mode: expected kv, projected, scout, text; found '", mode)),
              std::string::npos)
        << m.status();
  }
  EXPECT_FALSE(ParseQualityTable(R"({})", "t").ok());
  EXPECT_FALSE(ParseQualityTable(R"([])", "t").ok());
  EXPECT_FALSE(ParseQualityTable(R"([{"mode": "kv", "quality": 1, "retention": 2}])", "t").ok());
  auto projected =
      ParseQualityTable(R"([{"mode": "projected", "spec": "int4", "quality": 0.8}])", "t");
  ASSERT_TRUE(projected.ok()) << projected.status();
  EXPECT_EQ((*projected)[0].mode, kvstream::v1::MODE_PROJECTED);
  EXPECT_FALSE(
      ParseQualityTable(R"([{"mode": "projected", "spec": "int9", "quality": 1}])", "t").ok());
}

// A table's kv rows say which confidence gate their answers went through, so the edge
// can run with the gate its table was measured under; a table that does not say has none.
TEST(QualityTableTest, KvRowsCarryTheGateTheyWereMeasuredWith) {
  auto t = ParseQualityTable(R"([{"mode": "text", "quality": 0.9},
      {"mode": "kv", "spec": "int4", "quality": 1, "kv_min_confidence": 0.1},
      {"mode": "kv", "spec": "int2", "quality": 0.5, "kv_min_confidence": 0.1}])",
                             "t");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)[0].kv_min_confidence, -1);
  EXPECT_EQ((*t)[2].kv_min_confidence, 0.1);
  ASSERT_TRUE(MeasuredKvGate(*t).has_value());
  EXPECT_EQ(*MeasuredKvGate(*t), 0.1);
  auto unstated = ParseQualityTable(R"([{"mode": "kv", "spec": "int4", "quality": 1}])", "t");
  ASSERT_TRUE(unstated.ok()) << unstated.status();
  EXPECT_FALSE(MeasuredKvGate(*unstated).has_value());
  // A gate of zero (measured without one) is a statement too.
  auto off = ParseQualityTable(R"([{"mode": "kv", "quality": 1, "kv_min_confidence": 0}])", "t");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(MeasuredKvGate(*off), std::optional<double>(0.0));
}

// A table names the scout it was measured with, so an edge can tell a table made for
// another model; rows that do not say are allowed beside those that do.
TEST(QualityTableTest, RowsNameTheScoutTheyWereMeasuredWith) {
  auto t = ParseQualityTable(R"([{"mode": "text", "quality": 0.9},
      {"mode": "kv", "spec": "int4", "quality": 1, "scout": "qwen2-f57f"},
      {"mode": "kv", "spec": "int4", "quality": 0.8, "kind": "single", "scout": "qwen2-f57f"}])",
                             "t");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ(MeasuredScout(*t), std::optional<std::string>("qwen2-f57f"));
  auto none = ParseQualityTable(R"([{"mode": "text", "quality": 0.9}])", "t");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(MeasuredScout(*none).has_value());
}

// Every malformed table is INVALID_ARGUMENT naming the file, the entry and the field,
// with what was expected and what was found; none throws.
TEST(QualityTableTest, MalformedTablesNameTheEntryAndField) {
  struct Bad {
    const char* json;
    const char* message;
  };
  for (const Bad& b : std::initializer_list<Bad>{
           {"{}", "q.json: expected a JSON array of operating points"},
           {"[", "q.json: expected a JSON array of operating points"},
           {"[]", "q.json: no operating points"},
           {"[3]", "q.json[0]: expected {\"mode\", \"quality\" or \"f1\", ...}"},
           {R"([{"quality": 1}])", "q.json[0]: expected {\"mode\""},
           {R"([{"mode": "kv"}])", "q.json[0]: expected {\"mode\""},
           {R"([{"mode": "kv", "quality": "high"}])", "q.json[0]: expected {\"mode\""},
           {R"([{"mode": 1, "quality": 1}])", "q.json[0]: expected {\"mode\""},
           {R"([{"mode": "text", "quality": 1}, {"mode": "kv", "quality": 1, "selector": 3}])",
            "q.json[1]: selector must be a string, found number"},
           {R"([{"mode": "kv", "quality": 1, "spec": ["int4"]}])",
            "q.json[0]: spec must be a string, found array"},
           {R"([{"mode": "kv", "quality": 1, "retention": "half"}])",
            "q.json[0]: retention must be a number, found string"},
           {R"([{"mode": "kv", "quality": 1, "retention": 0}])",
            "q.json[0]: retention must be in (0, 1], found 0"},
           {R"([{"mode": "kv", "quality": 1.5}])",
            "q.json[0]: quality must be in [0, 1] (an F1 or its share), found 1.5"},
           {R"([{"mode": "kv", "f1": -0.1}])", "q.json[0]: f1 must be in [0, 1]"},
           {R"([{"mode": "fax", "quality": 1}])",
            "q.json[0]: mode: expected kv, projected, scout, text; found 'fax'"},
           {R"([{"mode": "kv", "quality": 1, "selector": "best"}])", "q.json[0]: "},
           {R"([{"mode": "kv", "quality": 1, "spec": "int9"}])", "q.json[0]: spec: "},
           {R"([{"mode": "kv", "quality": 1, "kind": ""}])",
            "q.json[0]: kind must be a non-empty string (the task kind measured)"},
           {R"([{"mode": "kv", "quality": 1, "kind": 2}])", "q.json[0]: kind must be a non-empty"},
           {R"([{"mode": "kv", "quality": 1, "tokens": 500}])",
            "q.json[0]: tokens must be [min, max], prompt lengths with 1 <= min <= max, found 500"},
           {R"([{"mode": "kv", "quality": 1, "tokens": [600, 400]}])", "found [600,400]"},
           {R"([{"mode": "kv", "quality": 1, "tokens": [0, 400]}])", "found [0,400]"},
           {R"([{"mode": "kv", "quality": 1, "tokens": [1.5, 400]}])", "found [1.5,400]"},
           {R"([{"mode": "kv", "quality": 1, "tokens": [1, 2, 3]}])", "found [1,2,3]"},
           {R"([{"mode": "kv", "quality": 1, "kv_min_confidence": 1.5}])",
            "q.json[0]: kv_min_confidence must be a probability in [0, 1], found 1.5"},
           {R"([{"mode": "kv", "quality": 1, "kv_min_confidence": "low"}])", "found \"low\""},
           {R"([{"mode": "text", "quality": 1, "kv_min_confidence": 0.5}])",
            "q.json[0]: kv_min_confidence belongs to kv rows, found it on a text row"},
           {R"([{"mode": "kv", "quality": 1, "kv_min_confidence": 0.1},
                {"mode": "kv", "spec": "int4", "quality": 1, "kv_min_confidence": 0.5}])",
            "q.json[1]: kv_min_confidence 0.5, where an earlier kv row states 0.1"},
           {R"([{"mode": "kv", "quality": 1, "kv_min_confidence": 0.1},
                {"mode": "kv", "spec": "int4", "quality": 1}])",
            "q.json[1]: kv_min_confidence none, where an earlier kv row states 0.1"},
           {R"([{"mode": "kv", "quality": 1, "scout": ""}])",
            "q.json[0]: scout must be a model fingerprint (a non-empty string), found \"\""},
           {R"([{"mode": "kv", "quality": 1, "scout": 7}])", "q.json[0]: scout must be a model"},
           {R"([{"mode": "kv", "quality": 1, "scout": "qwen2-a"},
                {"mode": "text", "quality": 1, "scout": "qwen2-b"}])",
            "q.json[1]: scout qwen2-b, where an earlier row states qwen2-a"},
       }) {
    auto t = ParseQualityTable(b.json, "q.json");
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << b.json;
    EXPECT_NE(t.status().message().find(b.message), std::string::npos)
        << "expected: " << b.message << "\nfound: " << t.status().message();
  }
  EXPECT_EQ(LoadQualityTable("/nonexistent.json").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvstream::control
