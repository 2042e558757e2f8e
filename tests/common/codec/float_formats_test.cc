#include "common/codec/float_formats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/codec/half.h"

namespace kvstream::codec {
namespace {

// Runs `body` once on each path this machine has (the software one always), and leaves
// the detected path active afterwards.
template <typename Body>
void OnEveryPath(Body body) {
  const FloatPath detected = ActiveFloatPath();
  for (FloatPath want : {FloatPath::kScalar, FloatPath::kF16c}) {
    const FloatPath got = ForceFloatPath(want);
    if (got != want) continue;  // no F16C here: the software path was covered
    SCOPED_TRACE(got == FloatPath::kF16c ? "f16c" : "scalar");
    body();
  }
  ForceFloatPath(detected);
}

uint16_t At(const std::vector<uint8_t>& b, size_t i) {
  return static_cast<uint16_t>(b[2 * i] | (b[2 * i + 1] << 8));
}

// Finite floats of every magnitude, both signs, with the halfway and subnormal cases of
// fp16 and bf16, and lengths that leave tails after the 8-lane blocks.
std::vector<float> Finite(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x(n);
  for (float& v : x) {
    const uint32_t bits = rng();
    v = BitsFloat((bits & 0x807fffffu) | ((rng() % 254u) << 23));  // exponent 0..253
  }
  // Ties round to even: 1 + 2^-11 and 1 + 3 * 2^-11 for fp16, 0x3f808000 and 0x3f818000
  // for bf16, one each way.
  const float specials[] = {0.0f,
                            -0.0f,
                            65504.0f,
                            -65504.0f,
                            65519.99f,
                            6.1035156e-05f,
                            5.9604645e-08f,
                            2.9802322e-08f,
                            1.0009766f,
                            1.0004883f,
                            1.0014648f,
                            BitsFloat(0x3f808000u),
                            BitsFloat(0x3f818000u),
                            -BitsFloat(0x3f818000u),
                            1e-40f,
                            -1e-45f};
  for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]) && i < n; ++i) {
    x[i * 7 % n] = specials[i];  // distinct slots while 7 * i < n
  }
  return x;
}

TEST(FloatFormatsTest, HalfMatchesTheSoftwareConversionBitForBit) {
  OnEveryPath([] {
    for (size_t n : {1u, 7u, 8u, 9u, 1000u, 4099u}) {
      std::vector<float> x = Finite(n, static_cast<uint32_t>(n));
      for (float& v : x) {  // within fp16's range, so that every element converts
        if (std::fabs(v) > 65504.0f) v = std::fmod(v, 65504.0f);
      }
      std::vector<uint8_t> out(2 * n);
      ASSERT_EQ(FloatsToHalf(x.data(), static_cast<int64_t>(n), out.data()), -1) << n;
      std::vector<float> back(n);
      HalfsToFloats(out.data(), static_cast<int64_t>(n), back.data());
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(At(out, i), FloatToHalf(x[i])) << "element " << i << " = " << x[i];
        ASSERT_EQ(FloatBits(back[i]), FloatBits(HalfToFloat(At(out, i)))) << i;
      }
    }
  });
}

TEST(FloatFormatsTest, EveryHalfDecodesAsInSoftware) {
  std::vector<uint8_t> all(2 * 65536);
  for (uint32_t h = 0; h < 65536; ++h) {
    all[2 * h] = static_cast<uint8_t>(h);
    all[2 * h + 1] = static_cast<uint8_t>(h >> 8);
  }
  OnEveryPath([&] {
    std::vector<float> y(65536), b(65536);
    HalfsToFloats(all.data(), 65536, y.data());
    Bf16sToFloats(all.data(), 65536, b.data());
    for (uint32_t h = 0; h < 65536; ++h) {
      const auto u = static_cast<uint16_t>(h);
      if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0) {
        ASSERT_TRUE(std::isnan(y[h])) << h;  // NaN payloads are not compared
      } else {
        ASSERT_EQ(FloatBits(y[h]), FloatBits(HalfToFloat(u))) << h;
      }
      ASSERT_EQ(FloatBits(b[h]), FloatBits(Bf16ToFloat(u))) << h;
    }
  });
}

TEST(FloatFormatsTest, Bf16MatchesTheSoftwareConversionBitForBit) {
  OnEveryPath([] {
    for (size_t n : {1u, 8u, 13u, 4099u}) {
      std::vector<float> x = Finite(n, 100u + static_cast<uint32_t>(n));
      for (float& v : x) {  // away from the top binade, which rounds up to infinity
        if (std::fabs(v) > 1e38f) v = 1e38f;
      }
      std::vector<uint8_t> out(2 * n);
      ASSERT_EQ(FloatsToBf16(x.data(), static_cast<int64_t>(n), out.data()), -1) << n;
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(At(out, i), FloatToBf16(x[i])) << "element " << i << " = " << x[i];
      }
    }
  });
}

// The first element that has no finite value in the format is reported, wherever it is
// (inside an 8-lane block or in the tail), and what comes before it is converted.
TEST(FloatFormatsTest, TheFirstElementOutOfRangeIsReported) {
  OnEveryPath([] {
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (const int64_t at : {0, 3, 8, 13, 17}) {
      for (const float bad : {inf, -inf, nan, 65520.0f, -1e6f}) {
        std::vector<float> x(20, 1.5f);
        x[at] = bad;
        if (at + 2 < 20) x[at + 2] = inf;  // a later one is not the first
        std::vector<uint8_t> out(40);
        EXPECT_EQ(FloatsToHalf(x.data(), 20, out.data()), at) << bad;
        for (int64_t i = 0; i < at; ++i) ASSERT_EQ(At(out, i), 0x3e00u) << i;  // 1.5
      }
      for (const float bad : {inf, -inf, nan, std::numeric_limits<float>::max()}) {
        std::vector<float> x(20, 1.5f);
        x[at] = bad;
        std::vector<uint8_t> out(40);
        EXPECT_EQ(FloatsToBf16(x.data(), 20, out.data()), at) << bad;
        for (int64_t i = 0; i < at; ++i) ASSERT_EQ(At(out, i), 0x3fc0u) << i;  // 1.5
      }
    }
  });
}

// Quantization parameters eight groups at a time: the same bytes and floats as the
// software path, for ranges of every magnitude (subnormal, zero-width, near +-65504 and
// beyond it, where both report the same first group).
TEST(FloatFormatsTest, GroupParamsMatchTheSoftwarePathBitForBit) {
  std::mt19937 rng(17);
  std::vector<float> lo, hi;
  for (int i = 0; i < 2000; ++i) {
    const float scale = std::ldexp(1.0f, static_cast<int>(rng() % 40) - 24);  // 2^-24 .. 2^15
    std::uniform_real_distribution<float> u(-scale, scale);
    float a = u(rng), b = u(rng);
    if (i % 17 == 0) b = a;  // a zero-width range
    lo.push_back(std::min(a, b));
    hi.push_back(std::max(a, b));
  }
  for (float v : {-65504.0f, 65504.0f, -0.0f, 0.0f, 1e-8f, -1e-8f}) {
    lo.push_back(std::min(v, 0.0f));
    hi.push_back(std::max(v, 0.0f));
  }
  for (int bits : {1, 2, 4, 8}) {
    SCOPED_TRACE(bits);
    const float levels = static_cast<float>((1 << bits) - 1);
    const auto n = static_cast<int64_t>(lo.size());
    std::vector<uint8_t> want(4 * n), got(4 * n);
    std::vector<float> want_off(n), want_inv(n), got_off(n), got_inv(n);
    ForceFloatPath(FloatPath::kScalar);
    ASSERT_EQ(
        GroupParams(lo.data(), hi.data(), n, levels, want.data(), want_off.data(), want_inv.data()),
        -1);
    OnEveryPath([&] {
      ASSERT_EQ(
          GroupParams(lo.data(), hi.data(), n, levels, got.data(), got_off.data(), got_inv.data()),
          -1);
      EXPECT_EQ(got, want);
      EXPECT_EQ(std::memcmp(got_off.data(), want_off.data(), 4 * n), 0);
      EXPECT_EQ(std::memcmp(got_inv.data(), want_inv.data(), 4 * n), 0);
    });
    // The software path's parameters are quantize.h's rule, read back from the bytes.
    for (int64_t i = 0; i < n; i += 97) {
      const uint16_t scale_h = At(want, 2 * i), off_h = At(want, 2 * i + 1);
      EXPECT_EQ(off_h, HalfRoundDown(lo[i])) << i;
      EXPECT_EQ(scale_h, HalfRoundUp((hi[i] - HalfToFloat(off_h)) / levels)) << i;
    }
  }
  // A range fp16 cannot hold: both paths stop at the same group.
  std::vector<float> l(20, -1.0f), h(20, 1.0f);
  h[13] = 70000.0f;
  std::vector<uint8_t> p(80);
  std::vector<float> o(20), v(20);
  OnEveryPath([&] {
    EXPECT_EQ(GroupParams(l.data(), h.data(), 20, 15, p.data(), o.data(), v.data()), 13);
  });
  h[13] = 1.0f;
  l[9] = -65505.0f;
  OnEveryPath(
      [&] { EXPECT_EQ(GroupParams(l.data(), h.data(), 20, 15, p.data(), o.data(), v.data()), 9); });
}

}  // namespace
}  // namespace kvstream::codec
