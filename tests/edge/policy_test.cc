#include "edge/policy.h"

#include <gtest/gtest.h>

namespace kvstream::edge {
namespace {

kvstream::v1::Policy Defaults() {
  kvstream::v1::Policy d;
  d.set_mode(kvstream::v1::MODE_KV);
  d.set_selector("q2c");
  d.set_retention(0.5);
  d.set_spec("int8");
  d.set_max_tokens(16);
  d.set_cloud_model("large");
  return d;
}

// A selection is probed over at least --estimate_selection_steps, never fewer steps than
// --estimate_steps gives the whole cache; the whole cache takes --estimate_steps alone.
TEST(PolicyTest, EstimateStepsForASelectionAreAtLeastTheSelectionSteps) {
  EXPECT_EQ(EstimateStepsFor(/*selects=*/false, 1, 3), 1);
  EXPECT_EQ(EstimateStepsFor(/*selects=*/true, 1, 3), 3);
  EXPECT_EQ(EstimateStepsFor(/*selects=*/true, 4, 3), 4);
  EXPECT_EQ(EstimateStepsFor(/*selects=*/true, 2, 0), 2);
  EXPECT_EQ(EstimateStepsFor(/*selects=*/false, 4, 1), 4);
}

TEST(PolicyTest, DefaultsApplyWhereTheRequestIsSilent) {
  auto p = ResolvePolicy({}, Defaults(), 4);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->mode, kvstream::v1::MODE_KV);
  EXPECT_EQ(p->selector, select::Policy::kQ2C);
  EXPECT_DOUBLE_EQ(p->retention, 0.5);
  EXPECT_EQ(p->spec, "int8");
  EXPECT_EQ(p->plan.base.k.bits, 8);
  EXPECT_EQ(p->max_tokens, 16u);
  EXPECT_EQ(p->cloud_model, "large");
  EXPECT_DOUBLE_EQ(p->top_p, 1.0);
}

TEST(PolicyTest, RequestFieldsWin) {
  kvstream::v1::Policy r;
  r.set_mode(kvstream::v1::MODE_TEXT);
  r.set_selector("snapkv");
  r.set_retention(0.25);
  r.set_spec("k=int4/ch,v=int4,L0=f16,zstd=3");
  r.set_max_tokens(3);
  r.set_cloud_model("scout");
  auto p = ResolvePolicy(r, Defaults(), 4);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->mode, kvstream::v1::MODE_TEXT);
  EXPECT_EQ(p->selector, select::Policy::kSnapKV);
  EXPECT_DOUBLE_EQ(p->retention, 0.25);
  EXPECT_EQ(p->plan.zstd_level, 3);
  EXPECT_EQ(p->plan.ForLayer(0).k.format, codec::Format::kF16);
  EXPECT_EQ(p->max_tokens, 3u);
  EXPECT_EQ(p->cloud_model, "scout");
}

TEST(PolicyTest, FullSelectionKeepsEverything) {
  kvstream::v1::Policy r;
  r.set_selector("full");
  r.set_retention(0.3);
  auto p = ResolvePolicy(r, Defaults(), 4);
  ASSERT_TRUE(p.ok());
  EXPECT_DOUBLE_EQ(p->retention, 1.0);
}

TEST(PolicyTest, BadFieldsAreInvalidArgumentNamingTheField) {
  struct Case {
    const char* what;
    kvstream::v1::Policy policy;
    const char* needle;
  };
  std::vector<Case> cases;
  {
    kvstream::v1::Policy p;
    p.set_spec("int9");
    cases.push_back({"spec", p, "policy.spec 'int9'"});
  }
  {
    kvstream::v1::Policy p;
    p.set_spec("int4,L7=f16");  // layer 7 of a 4-layer model
    cases.push_back({"plan layer", p, "policy.spec"});
  }
  {
    kvstream::v1::Policy p;
    p.set_selector("best");
    cases.push_back({"selector", p, "policy.selector"});
  }
  {
    kvstream::v1::Policy p;
    p.set_retention(1.5);
    cases.push_back({"retention", p, "policy.retention"});
  }
  {
    kvstream::v1::Policy p;
    p.set_retention(-0.5);
    cases.push_back({"negative retention", p, "policy.retention"});
  }
  {
    kvstream::v1::Policy p;
    p.set_temperature(-1);
    cases.push_back({"temperature", p, "temperature"});
  }
  {
    kvstream::v1::Policy p;
    p.set_top_p(2);
    cases.push_back({"top_p", p, "top_p"});
  }
  {
    kvstream::v1::Policy p;
    p.set_mode(static_cast<kvstream::v1::Mode>(42));
    cases.push_back({"mode", p, "policy.mode"});
  }
  for (const Case& c : cases) {
    auto p = ResolvePolicy(c.policy, Defaults(), 4);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(p.status().message().find(c.needle), std::string::npos)
        << c.what << ": " << p.status();
  }
}

}  // namespace
}  // namespace kvstream::edge
