#include "common/codec/spec.h"

#include <gtest/gtest.h>

namespace kvstream::codec {
namespace {

TEST(SpecTest, ParsesTheDocumentedExamples) {
  auto p = ParsePlan("k=int4/ch,v=int4/tok,L0=f16,zstd=3");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->zstd_level, 3);
  EXPECT_EQ(p->ForLayer(0).k, TensorSpec::F16());
  EXPECT_EQ(p->ForLayer(0).v, TensorSpec::F16());
  EXPECT_EQ(p->ForLayer(1).k, TensorSpec::Int(4, Axis::kPerChannel));
  EXPECT_EQ(p->ForLayer(27).v, TensorSpec::Int(4, Axis::kPerToken));

  p = ParsePlan("int4/g32,L0-1.k=int8");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ForLayer(1).k, TensorSpec::Int(8));
  EXPECT_EQ(p->ForLayer(1).v, TensorSpec::Int(4, Axis::kGroup, 32));
  EXPECT_EQ(p->ForLayer(2).k, TensorSpec::Int(4, Axis::kGroup, 32));

  p = ParsePlan("raw");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->lossless(4));
  EXPECT_EQ(p->zstd_level, 0);
}

TEST(SpecTest, LaterOverridesWin) {
  auto p = ParsePlan("int4,L0-3=int8,L2=f16,L3.v=int2");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ForLayer(1).k, TensorSpec::Int(8));
  EXPECT_EQ(p->ForLayer(2).k, TensorSpec::F16());
  EXPECT_EQ(p->ForLayer(3).k, TensorSpec::Int(8));
  EXPECT_EQ(p->ForLayer(3).v, TensorSpec::Int(2));
  EXPECT_EQ(p->ForLayer(4).k, TensorSpec::Int(4));
}

TEST(SpecTest, CanonicalStringRoundTrips) {
  for (const char* text : {"raw", "f16", "bf16", "int8", "int3/ch", "int6/g32", "k=int4/ch,v=int4",
                           "int4,L0=f16,zstd=3", "int4,L0-2.k=int8,L5.v=f16", "f16+svd8",
                           "int8+ad4", "int4/ch+sd,zstd=19", "int4,zstd=3,tiers=8"}) {
    auto p = ParsePlan(text);
    ASSERT_TRUE(p.ok()) << text << ": " << p.status();
    EXPECT_EQ(p->ToString(), text);
    auto again = ParsePlan(p->ToString());
    ASSERT_TRUE(again.ok());
    for (int l = 0; l < 8; ++l) EXPECT_EQ(again->ForLayer(l), p->ForLayer(l));
  }
}

TEST(SpecTest, ErrorsNameTheBadItem) {
  struct Bad {
    const char* text;
    const char* needle;
  };
  for (const Bad& b : std::initializer_list<Bad>{
           {"", "empty"},
           {"int9", "item 1 'int9': spec: int bits must be 1..8, found 9"},
           {"int4,int0", "item 2 'int0'"},
           {"int", "int bits: expected a non-negative integer, found ''"},
           {"int4/xy", "expected an axis (tok, ch, gN), found 'xy'"},
           {"int4/g0", "group size must be 1..4096, found 0"},
           {"f16/ch", "an axis only applies to int formats"},
           {"fp8", "expected a format (raw, f16, bf16, int1..int8), found 'fp8'"},
           {"int4,L2-1=f16", "must not be descending"},
           {"int4,L0.q=f16", "expected '.k' or '.v'"},
           {"int4,Lx=f16", "first layer"},
           {"int4,zstd=99", "zstd level must be 1..22 or off, found 99"},
           {"int4,tiers=1", "tiers must be 2..64 or off, found 1"},
           {"int4,tiers=65", "tiers must be 2..64 or off, found 65"},
           {"int4,tiers=x", "tiers: expected a non-negative integer, found 'x'"},
           {"int4,foo=int8", "expected a key"},
           {"raw+sd", "a transform needs a float16 or int format"},
           {"int4+svd0", "svd rank must be 1..4096"},
           {"int4+ad1", "anchor-delta group must be 2..1048576"},
           {"int4+xx", "expected a transform"},
       }) {
    auto p = ParsePlan(b.text);
    ASSERT_FALSE(p.ok()) << b.text;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(b.needle), std::string::npos)
        << b.text << " -> " << p.status().message();
  }
}

TEST(SpecTest, ValidateAgainstModelDepth) {
  auto p = ParsePlan("int4,L30=f16");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->Validate(36).ok());
  const auto st = p->Validate(28);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("model has 28 layers"), std::string::npos) << st;
}

}  // namespace
}  // namespace kvstream::codec
