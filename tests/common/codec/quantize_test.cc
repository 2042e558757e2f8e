#include "common/codec/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/codec/float_formats.h"
#include "common/codec/half.h"

namespace kvstream::codec {
namespace {

std::vector<float> RandomData(const TensorShape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> x(static_cast<size_t>(s.numel()));
  // Channels with different offsets and spreads, like real keys.
  for (int64_t h = 0; h < s.heads; ++h) {
    for (int64_t t = 0; t < s.tokens; ++t) {
      for (int64_t d = 0; d < s.dim; ++d) {
        x[(h * s.tokens + t) * s.dim + d] = n(rng) * (1.0f + static_cast<float>(d % 7)) + u(rng);
      }
    }
  }
  return x;
}

// The documented formula, written out independently of the implementation.
uint64_t FormulaBytes(const TensorSpec& spec, const TensorShape& s, DType src) {
  const uint64_t n = static_cast<uint64_t>(s.numel());
  if (spec.format == Format::kRaw) return n * (src == DType::kF32 ? 4 : 2);
  if (spec.format != Format::kInt) return 2 * n;
  uint64_t groups = 0;
  if (spec.axis == Axis::kPerToken) groups = s.heads * s.tokens;
  if (spec.axis == Axis::kPerChannel) groups = s.heads * s.dim;
  if (spec.axis == Axis::kGroup) {
    groups = s.heads * s.tokens * ((s.dim + spec.group_size - 1) / spec.group_size);
  }
  return groups * 4 + (n * spec.bits + 7) / 8;
}

// Index of the (scale, offset) group that element (h, t, d) belongs to.
uint64_t GroupOf(const TensorSpec& spec, const TensorShape& s, int64_t h, int64_t t, int64_t d) {
  if (spec.axis == Axis::kPerToken) return h * s.tokens + t;
  if (spec.axis == Axis::kPerChannel) return h * s.dim + d;
  const int64_t blocks = (s.dim + spec.group_size - 1) / spec.group_size;
  return (h * s.tokens + t) * blocks + d / spec.group_size;
}

struct Case {
  int bits;
  TensorSpec spec;
  TensorShape shape;
};

std::vector<Case> AllIntCases() {
  std::vector<Case> cases;
  const std::vector<TensorShape> shapes = {{1, 1, 1}, {2, 3, 5}, {3, 17, 64}, {8, 33, 128}};
  for (int bits = 1; bits <= 8; ++bits) {
    for (const TensorShape& s : shapes) {
      cases.push_back({bits, TensorSpec::Int(bits, Axis::kPerToken), s});
      cases.push_back({bits, TensorSpec::Int(bits, Axis::kPerChannel), s});
      for (int g : {1, 8, 32, 48})
        cases.push_back({bits, TensorSpec::Int(bits, Axis::kGroup, g), s});
    }
  }
  return cases;
}

TEST(QuantizeTest, IntRoundTripWithinHalfScaleForEveryWidthAxisAndGroup) {
  int checked = 0;
  for (const Case& c : AllIntCases()) {
    SCOPED_TRACE(c.spec.ToString() + " shape " + std::to_string(c.shape.heads) + "x" +
                 std::to_string(c.shape.tokens) + "x" + std::to_string(c.shape.dim));
    const std::vector<float> x = RandomData(c.shape, 7u + static_cast<uint32_t>(checked));
    const uint64_t bytes = EncodedTensorBytes(c.spec, c.shape, DType::kF32);
    ASSERT_EQ(bytes, FormulaBytes(c.spec, c.shape, DType::kF32));
    std::vector<uint8_t> enc(bytes + 16, 0xAB);
    ASSERT_TRUE(EncodeTensor(c.spec, c.shape, DType::kF32, x.data(), enc.data()).ok());
    for (size_t i = bytes; i < enc.size(); ++i) ASSERT_EQ(enc[i], 0xAB) << "wrote past the formula";
    std::vector<float> y(x.size());
    ASSERT_TRUE(DecodeTensor(c.spec, c.shape, DType::kF32, enc.data(), bytes, y.data()).ok());
    for (int64_t h = 0; h < c.shape.heads; ++h) {
      for (int64_t t = 0; t < c.shape.tokens; ++t) {
        for (int64_t d = 0; d < c.shape.dim; ++d) {
          const size_t i = static_cast<size_t>((h * c.shape.tokens + t) * c.shape.dim + d);
          const uint64_t g = GroupOf(c.spec, c.shape, h, t, d);
          uint16_t scale_h;
          std::memcpy(&scale_h, enc.data() + g * 4, 2);
          const float scale = HalfToFloat(scale_h);
          // Bound: half a step of the stored fp16 scale, plus float rounding.
          const float tol = 0.5f * scale * (1.0f + 1e-5f) + 1e-6f * (1.0f + std::fabs(x[i]));
          ASSERT_LE(std::fabs(y[i] - x[i]), tol) << "element " << i << " group " << g;
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 100000);
}

// Decoding straight into bf16 rows gives the bits of decoding to float32 and rounding
// afterwards, for every width, axis and group; rows land at their head's stride and the
// rows between heads are left alone.
TEST(QuantizeTest, DirectBf16DecodingEqualsFloatDecodingRounded) {
  int checked = 0;
  for (const Case& c : AllIntCases()) {
    const TensorShape& s = c.shape;
    SCOPED_TRACE(c.spec.ToString() + " shape " + std::to_string(s.heads) + "x" +
                 std::to_string(s.tokens) + "x" + std::to_string(s.dim));
    const std::vector<float> x = RandomData(s, 11u + static_cast<uint32_t>(checked));
    const uint64_t bytes = EncodedTensorBytes(c.spec, s, DType::kF32);
    std::vector<uint8_t> enc(bytes);
    ASSERT_TRUE(EncodeTensor(c.spec, s, DType::kF32, x.data(), enc.data()).ok());
    std::vector<float> y(x.size());
    ASSERT_TRUE(DecodeTensor(c.spec, s, DType::kF32, enc.data(), bytes, y.data()).ok());
    std::vector<uint8_t> want(2 * y.size());
    FloatsToBf16Rounded(y.data(), static_cast<int64_t>(y.size()), want.data());
    const int64_t stride = s.tokens + 3;  // a cache's capacity beyond these slots
    std::vector<uint8_t> got(2 * s.heads * stride * s.dim, 0xCD);
    ASSERT_TRUE(
        DecodeTensorToBf16(c.spec, s, DType::kF32, enc.data(), bytes, got.data(), stride).ok());
    for (int64_t h = 0; h < s.heads; ++h) {
      const size_t run = 2 * s.tokens * s.dim;
      ASSERT_EQ(std::memcmp(got.data() + 2 * h * stride * s.dim, want.data() + h * run, run), 0)
          << "head " << h;
      for (size_t i = run; i < static_cast<size_t>(2 * stride * s.dim); ++i) {
        ASSERT_EQ(got[2 * h * stride * s.dim + i], 0xCD) << "wrote past head " << h;
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(AllIntCases().size()));
}

// Rows whose stored scale or offset is not finite (no encoder writes them; a hostile or
// corrupted chunk may) decode to the same bits on the direct path as through float32, on
// the vector path and on the scalar one.
TEST(QuantizeTest, DirectBf16DecodingOfNonFiniteParamsEqualsFloatDecoding) {
  const TensorShape s{2, 6, 32};
  for (const FloatPath path : {FloatPath::kF16c, FloatPath::kScalar}) {
    ForceFloatPath(path);
    for (const int bits : {8, 4}) {
      SCOPED_TRACE(std::to_string(bits) + " bits, path " + std::to_string(static_cast<int>(path)));
      const TensorSpec spec = TensorSpec::Int(bits, Axis::kPerToken);
      const std::vector<float> x = RandomData(s, 3);
      const uint64_t bytes = EncodedTensorBytes(spec, s, DType::kF32);
      std::vector<uint8_t> enc(bytes);
      ASSERT_TRUE(EncodeTensor(spec, s, DType::kF32, x.data(), enc.data()).ok());
      // fp16 +inf, a NaN whose payload carries when rounded as a finite value would, 65504
      const uint16_t inf = 0x7c00, nan = 0x7fff, big = 0x7bff;
      std::memcpy(enc.data() + 1 * 4, &inf, 2);      // row 1: infinite scale
      std::memcpy(enc.data() + 2 * 4 + 2, &nan, 2);  // row 2: NaN offset
      std::memcpy(enc.data() + 7 * 4, &big, 2);      // row 7: the largest finite scale
      std::memcpy(enc.data() + 7 * 4 + 2, &big, 2);
      std::vector<float> y(x.size());
      ASSERT_TRUE(DecodeTensor(spec, s, DType::kF32, enc.data(), bytes, y.data()).ok());
      std::vector<uint8_t> want(2 * y.size()), got(2 * y.size());
      FloatsToBf16Rounded(y.data(), static_cast<int64_t>(y.size()), want.data());
      ASSERT_TRUE(
          DecodeTensorToBf16(spec, s, DType::kF32, enc.data(), bytes, got.data(), s.tokens).ok());
      EXPECT_EQ(got, want);
    }
  }
  ForceFloatPath(FloatPath::kF16c);
}

// Direct bf16 decoding takes int specs without a transform, the encoded size exactly and
// a head stride of at least the tokens; it refuses the rest with what it expected.
TEST(QuantizeTest, DirectBf16DecodingRefusesWhatItCannotTake) {
  const TensorShape s{2, 4, 8};
  const TensorSpec int4 = TensorSpec::Int(4, Axis::kPerToken);
  std::vector<uint8_t> enc(EncodedTensorBytes(int4, s, DType::kF32));
  std::vector<uint8_t> out(2 * s.numel() * 2);
  EXPECT_TRUE(DecodesToBf16Directly(int4));
  EXPECT_TRUE(DecodeTensorToBf16(int4, s, DType::kF32, enc.data(), enc.size(), out.data(), 4).ok());
  const absl::Status short_input =
      DecodeTensorToBf16(int4, s, DType::kF32, enc.data(), enc.size() - 1, out.data(), 4);
  EXPECT_NE(short_input.message().find("expected " + std::to_string(enc.size()) + " bytes"),
            std::string::npos)
      << short_input;
  const absl::Status narrow =
      DecodeTensorToBf16(int4, s, DType::kF32, enc.data(), enc.size(), out.data(), 3);
  EXPECT_NE(narrow.message().find("head stride of at least 4, found"), std::string::npos) << narrow;
  for (const char* text : {"f16", "raw", "int4+sd"}) {
    auto spec = ParseTensorSpec(text);
    ASSERT_TRUE(spec.ok()) << text;
    EXPECT_FALSE(DecodesToBf16Directly(*spec)) << text;
    EXPECT_EQ(
        DecodeTensorToBf16(*spec, s, DType::kF32, enc.data(), enc.size(), out.data(), 4).code(),
        absl::StatusCode::kInvalidArgument)
        << text;
  }
}

TEST(QuantizeTest, StoredScaleIsNearTheGroupsRangeOverLevels) {
  const TensorShape s{2, 9, 64};
  const std::vector<float> x = RandomData(s, 3);
  for (int bits = 1; bits <= 8; ++bits) {
    const TensorSpec spec = TensorSpec::Int(bits, Axis::kPerToken);
    std::vector<uint8_t> enc(EncodedTensorBytes(spec, s, DType::kF32));
    ASSERT_TRUE(EncodeTensor(spec, s, DType::kF32, x.data(), enc.data()).ok());
    for (int64_t r = 0; r < s.heads * s.tokens; ++r) {
      float lo = x[r * s.dim], hi = lo;
      for (int64_t d = 0; d < s.dim; ++d) {
        lo = std::min(lo, x[r * s.dim + d]);
        hi = std::max(hi, x[r * s.dim + d]);
      }
      uint16_t sh;
      std::memcpy(&sh, enc.data() + r * 4, 2);
      const float ideal = (hi - lo) / static_cast<float>((1 << bits) - 1);
      EXPECT_GE(HalfToFloat(sh), ideal * (1 - 1e-6f));
      EXPECT_LE(HalfToFloat(sh), ideal * 1.002f + 0.004f / ((1 << bits) - 1));
    }
  }
}

TEST(QuantizeTest, ConstantGroupDecodesExactlyWhenRepresentable) {
  const TensorShape s{1, 4, 16};
  std::vector<float> x(static_cast<size_t>(s.numel()), 0.75f);
  const TensorSpec spec = TensorSpec::Int(4);
  std::vector<uint8_t> enc(EncodedTensorBytes(spec, s, DType::kF32));
  ASSERT_TRUE(EncodeTensor(spec, s, DType::kF32, x.data(), enc.data()).ok());
  std::vector<float> y(x.size());
  ASSERT_TRUE(DecodeTensor(spec, s, DType::kF32, enc.data(), enc.size(), y.data()).ok());
  EXPECT_EQ(y, x);
}

TEST(QuantizeTest, RawPassthroughIsBitExactForEverySourceDtype) {
  const TensorShape s{4, 21, 32};
  const std::vector<float> x = RandomData(s, 11);
  for (DType src : {DType::kF32, DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(std::string(DTypeName(src)));
    std::vector<uint8_t> source(static_cast<size_t>(s.numel()) * DTypeBytes(src));
    std::vector<float> expected(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      if (src == DType::kF32) {
        std::memcpy(source.data() + 4 * i, &x[i], 4);
        expected[i] = x[i];
      } else {
        const uint16_t h = src == DType::kF16 ? FloatToHalf(x[i]) : FloatToBf16(x[i]);
        std::memcpy(source.data() + 2 * i, &h, 2);
        expected[i] = src == DType::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
      }
    }
    const TensorSpec spec = TensorSpec::Raw();
    const uint64_t bytes = EncodedTensorBytes(spec, s, src);
    ASSERT_EQ(bytes, source.size());
    std::vector<uint8_t> enc(bytes);
    ASSERT_TRUE(EncodeTensor(spec, s, src, source.data(), enc.data()).ok());
    EXPECT_EQ(enc, source);
    std::vector<float> y(x.size());
    ASSERT_TRUE(DecodeTensor(spec, s, src, enc.data(), bytes, y.data()).ok());
    EXPECT_EQ(0, std::memcmp(y.data(), expected.data(), 4 * y.size()));
  }
}

TEST(QuantizeTest, IntFromHalfAndBf16SourcesMatchTheirFloatValues) {
  const TensorShape s{2, 5, 16};
  const std::vector<float> x = RandomData(s, 5);
  std::vector<uint16_t> h(x.size());
  std::vector<float> hx(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    h[i] = FloatToBf16(x[i]);
    hx[i] = Bf16ToFloat(h[i]);
  }
  const TensorSpec spec = TensorSpec::Int(6, Axis::kPerChannel);
  std::vector<uint8_t> a(EncodedTensorBytes(spec, s, DType::kBF16)), b(a.size());
  ASSERT_TRUE(EncodeTensor(spec, s, DType::kBF16, h.data(), a.data()).ok());
  ASSERT_TRUE(EncodeTensor(spec, s, DType::kF32, hx.data(), b.data()).ok());
  EXPECT_EQ(a, b);
}

TEST(QuantizeTest, SixteenBitFormatsRoundToNearest) {
  const TensorShape s{3, 7, 8};
  const std::vector<float> x = RandomData(s, 13);
  for (Format f : {Format::kF16, Format::kBF16}) {
    TensorSpec spec;
    spec.format = f;
    const uint64_t bytes = EncodedTensorBytes(spec, s, DType::kF32);
    ASSERT_EQ(bytes, 2u * s.numel());
    std::vector<uint8_t> enc(bytes);
    ASSERT_TRUE(EncodeTensor(spec, s, DType::kF32, x.data(), enc.data()).ok());
    std::vector<float> y(x.size());
    ASSERT_TRUE(DecodeTensor(spec, s, DType::kF32, enc.data(), bytes, y.data()).ok());
    const float rel = f == Format::kF16 ? 1.0f / 2048 : 1.0f / 256;
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_LE(std::fabs(y[i] - x[i]), rel * std::fabs(x[i]) + 1e-7f) << i;
    }
  }
}

TEST(QuantizeTest, HalfConversionMatchesExhaustiveRoundTrip) {
  // Every finite half converts to float and back unchanged.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(h))), h) << h;
  }
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);                       // rounds to inf
  EXPECT_EQ(HalfToFloat(FloatToHalf(1.0f + 1.0f / 4096)), 1.0f);  // ties to even
  EXPECT_LE(HalfToFloat(HalfRoundDown(0.1f)), 0.1f);
  EXPECT_GE(HalfToFloat(HalfRoundUp(0.1f)), 0.1f);
  EXPECT_LE(HalfToFloat(HalfRoundDown(-0.1f)), -0.1f);
  EXPECT_GT(HalfToFloat(HalfRoundUp(1e-9f)), 0.0f);
}

TEST(QuantizeTest, DeltaTransformsRoundTrip) {
  const TensorShape s{2, 19, 16};
  const std::vector<float> x = RandomData(s, 17);
  for (const char* text : {"f16+ad4", "f16+sd", "int8+ad8", "int8/ch+sd"}) {
    SCOPED_TRACE(text);
    auto spec = ParseTensorSpec(text);
    ASSERT_TRUE(spec.ok()) << spec.status();
    const uint64_t bytes = EncodedTensorBytes(*spec, s, DType::kF32);
    TensorSpec plain = *spec;
    plain.transform = Transform::kNone;
    plain.transform_param = 0;
    EXPECT_EQ(bytes, EncodedTensorBytes(plain, s, DType::kF32));
    std::vector<uint8_t> enc(bytes);
    ASSERT_TRUE(EncodeTensor(*spec, s, DType::kF32, x.data(), enc.data()).ok());
    std::vector<float> y(x.size());
    ASSERT_TRUE(DecodeTensor(*spec, s, DType::kF32, enc.data(), bytes, y.data()).ok());
    double max_err = 0;
    for (size_t i = 0; i < x.size(); ++i)
      max_err = std::max<double>(max_err, std::fabs(y[i] - x[i]));
    // f16 deltas are near exact; int8 deltas accumulate at most a few steps.
    EXPECT_LT(max_err, spec->format == Format::kF16 ? 0.05 : 1.5);
  }
}

TEST(QuantizeTest, SvdFullRankReconstructsAndErrorFallsWithRank) {
  const TensorShape s{2, 24, 8};
  const std::vector<float> x = RandomData(s, 23);
  double prev = 1e30;
  for (int r : {1, 2, 4, 8}) {
    auto spec = ParseTensorSpec("f16+svd" + std::to_string(r));
    ASSERT_TRUE(spec.ok());
    const uint64_t bytes = EncodedTensorBytes(*spec, s, DType::kF32);
    EXPECT_EQ(bytes, 2u * (s.heads * s.tokens * r + s.heads * r * s.dim));
    std::vector<uint8_t> enc(bytes);
    ASSERT_TRUE(EncodeTensor(*spec, s, DType::kF32, x.data(), enc.data()).ok());
    std::vector<float> y(x.size());
    ASSERT_TRUE(DecodeTensor(*spec, s, DType::kF32, enc.data(), bytes, y.data()).ok());
    double err = 0;
    for (size_t i = 0; i < x.size(); ++i) err += (y[i] - x[i]) * (y[i] - x[i]);
    EXPECT_LT(err, prev);
    prev = err;
    if (r == 8) {
      double norm = 0;
      for (float v : x) norm += v * v;
      EXPECT_LT(err / norm, 1e-5);  // full rank: only fp16 rounding of the factors
    }
  }
}

TEST(QuantizeTest, RejectsNonFiniteAndOutOfRangeInput) {
  const TensorShape s{1, 2, 4};
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<uint8_t> enc(64);
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    x[5] = bad;
    for (const char* text : {"int4", "int4/ch", "int4/g2", "f16", "bf16"}) {
      auto spec = ParseTensorSpec(text);
      const auto st = EncodeTensor(*spec, s, DType::kF32, x.data(), enc.data());
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << text << " " << bad;
    }
  }
  x[5] = 70000.0f;
  auto st = EncodeTensor(*ParseTensorSpec("f16"), s, DType::kF32, x.data(), enc.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("fp16 range"), std::string::npos) << st;
  st = EncodeTensor(*ParseTensorSpec("int8"), s, DType::kF32, x.data(), enc.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuantizeTest, DecodeRejectsWrongSize) {
  const TensorShape s{1, 2, 4};
  std::vector<uint8_t> enc(100);
  std::vector<float> y(8);
  const auto st = DecodeTensor(TensorSpec::Int(4), s, DType::kF32, enc.data(), 7, y.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("expected 12 bytes, found 7"), std::string::npos) << st;
}

}  // namespace
}  // namespace kvstream::codec
