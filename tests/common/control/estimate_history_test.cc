#include "common/control/estimate_history.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/select/select.h"

namespace kvstream::control {
namespace {

OperatingPoint Point(select::Policy selector, double retention, const std::string& spec,
                     double quality) {
  OperatingPoint p;
  p.mode = kvstream::v1::MODE_KV;
  p.selector = selector;
  p.retention = retention;
  p.spec = spec;
  p.quality = quality;
  p.bands = {QualityBand{"needle", 400, 600, quality, 0}};
  return p;
}

TEST(EstimateHistoryTest, RejectionsPriceAPointDownAndDecayWithRequests) {
  EstimateHistory h(0.5, 0.1);
  const OperatingPoint q2c = Point(select::Policy::kQ2C, 0.25, "int4", 1.0);
  const OperatingPoint full = Point(select::Policy::kFull, 1.0, "int4", 0.9);
  EXPECT_EQ(h.RejectionShare(q2c.label()), 0.0);
  h.Observe(q2c.label(), /*rejected=*/true);
  EXPECT_DOUBLE_EQ(h.RejectionShare(q2c.label()), 0.5);
  auto priced = h.Discount({q2c, full});
  EXPECT_DOUBLE_EQ(priced[0].quality, 0.5);
  EXPECT_DOUBLE_EQ(priced[0].bands[0].quality, 0.5);
  EXPECT_DOUBLE_EQ(priced[1].quality, 0.9) << "a point never estimated keeps the table's value";
  h.Observe(q2c.label(), true);
  EXPECT_DOUBLE_EQ(h.RejectionShare(q2c.label()), 0.75);
  h.Observe(q2c.label(), false);
  EXPECT_DOUBLE_EQ(h.RejectionShare(q2c.label()), 0.375);
  // Each request takes a tenth off, so a point set aside is tried again later.
  const auto ticked = h.Tick();
  EXPECT_DOUBLE_EQ(h.RejectionShare(q2c.label()), 0.3375);
  ASSERT_EQ(ticked.size(), 1u);
  EXPECT_DOUBLE_EQ(ticked.at(q2c.label()), 0.3375);
  std::map<std::string, double> last;
  for (int i = 0; i < 60 && h.RejectionShare(q2c.label()) > 0; ++i) last = h.Tick();
  EXPECT_EQ(h.RejectionShare(q2c.label()), 0.0) << "forgotten below a thousandth";
  ASSERT_EQ(last.size(), 1u) << "the tick that forgets a point reports it at 0";
  EXPECT_EQ(last.at(q2c.label()), 0.0);
  EXPECT_TRUE(h.Tick().empty());
  EXPECT_DOUBLE_EQ(h.Discount({q2c})[0].quality, 1.0);
}

// Under a quality floor of 0.9 of the best, one rejection prices the best point below
// the floor for the 15 requests that follow; the 16th (its share decayed below a tenth)
// considers it again.
TEST(EstimateHistoryTest, OneRejectionSetsAPointAsideForAWhile) {
  EstimateHistory h;
  const OperatingPoint q2c = Point(select::Policy::kQ2C, 0.25, "int4", 1.0);
  h.Observe(q2c.label(), true);
  int requests = 0;
  while (h.Discount({q2c})[0].quality < 0.9) {
    h.Tick();
    ++requests;
  }
  EXPECT_EQ(requests, 16);
}

}  // namespace
}  // namespace kvstream::control
