#include "common/codec/float_formats.h"

#include <atomic>
#include <cstring>

#include "common/codec/half.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define KVS_HAVE_F16C_PATH 1
#define KVS_F16C __attribute__((target("avx2,f16c")))
#endif

namespace kvstream::codec {
namespace {

bool CpuHasF16c() {
#ifdef KVS_HAVE_F16C_PATH
  // F16C is CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports has no "f16c").
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0 || (ecx & (1u << 29)) == 0) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

std::atomic<FloatPath>& Path() {
  static std::atomic<FloatPath> path{CpuHasF16c() ? FloatPath::kF16c : FloatPath::kScalar};
  return path;
}

// ---- software ------------------------------------------------------------------------

int64_t ScalarToHalf(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = FloatToHalf(x[i]);
    if ((h & 0x7c00u) == 0x7c00u) return i;
    out[2 * i] = static_cast<uint8_t>(h);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return -1;
}

void ScalarFromHalf(const uint8_t* in, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    y[i] = HalfToFloat(static_cast<uint16_t>(in[2 * i] | (in[2 * i + 1] << 8)));
  }
}

// An element fails when it is not finite, or rounds to infinity (above bf16's largest).
int64_t ScalarToBf16(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t v = FloatBits(x[i]);
    const uint16_t h = static_cast<uint16_t>((v + 0x7fffu + ((v >> 16) & 1u)) >> 16);
    if ((v & 0x7f800000u) == 0x7f800000u || (h & 0x7f80u) == 0x7f80u) return i;
    out[2 * i] = static_cast<uint8_t>(h);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return -1;
}

void ScalarFromBf16(const uint8_t* in, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    y[i] = BitsFloat(static_cast<uint32_t>(in[2 * i] | (in[2 * i + 1] << 8)) << 16);
  }
}

int64_t ScalarGroupParams(const float* lo, const float* hi, int64_t n, float levels,
                          uint8_t* params, float* offset, float* inv) {
  for (int64_t i = 0; i < n; ++i) {
    if (lo[i] < -kHalfMax || hi[i] > kHalfMax) return i;
    const uint16_t off_h = HalfRoundDown(lo[i]);
    offset[i] = HalfToFloat(off_h);
    const float step = (hi[i] - offset[i]) / levels;
    if (!(step <= kHalfMax)) return i;
    const uint16_t scale_h = HalfRoundUp(step);
    const float scale = HalfToFloat(scale_h);
    inv[i] = scale > 0.0f ? 1.0f / scale : 0.0f;
    uint8_t* p = params + 4 * i;
    p[0] = static_cast<uint8_t>(scale_h);
    p[1] = static_cast<uint8_t>(scale_h >> 8);
    p[2] = static_cast<uint8_t>(off_h);
    p[3] = static_cast<uint8_t>(off_h >> 8);
  }
  return -1;
}

// ---- F16C + AVX2 ---------------------------------------------------------------------

#ifdef KVS_HAVE_F16C_PATH
KVS_F16C int64_t F16cToHalf(const float* x, int64_t n, uint8_t* out) {
  const __m128i exp_mask = _mm_set1_epi16(0x7c00);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h =
        _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m128i special = _mm_cmpeq_epi16(_mm_and_si128(h, exp_mask), exp_mask);
    if (_mm_movemask_epi8(special) != 0) break;  // the software path finds which
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), h);
  }
  const int64_t tail = ScalarToHalf(x + i, n - i, out + 2 * i);
  return tail < 0 ? -1 : i + tail;
}

KVS_F16C void F16cFromHalf(const uint8_t* in, int64_t n, float* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(h));
  }
  ScalarFromHalf(in + 2 * i, n - i, y + i);
}

// bf16 keeps the float's top half, rounded to nearest even: integer arithmetic on eight
// lanes, then the low 16 bits of each lane packed in order.
KVS_F16C int64_t Avx2ToBf16(const float* x, int64_t n, uint8_t* out) {
  const __m256i exp_mask = _mm256_set1_epi32(0x7f800000);
  const __m256i bias = _mm256_set1_epi32(0x7fff);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i bf16_exp = _mm256_set1_epi32(0x7f80);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(v, 16), one);
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(v, _mm256_add_epi32(bias, odd)), 16);
    // Not finite, or rounded up to infinity: the software path finds which, from here.
    const __m256i special =
        _mm256_or_si256(_mm256_cmpeq_epi32(_mm256_and_si256(v, exp_mask), exp_mask),
                        _mm256_cmpeq_epi32(_mm256_and_si256(r, bf16_exp), bf16_exp));
    if (_mm256_movemask_epi8(special) != 0) break;
    // r's lanes are below 2^16: packus keeps them, per 128-bit half; permute orders them.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), _mm256_castsi256_si128(packed));
  }
  const int64_t tail = ScalarToBf16(x + i, n - i, out + 2 * i);
  return tail < 0 ? -1 : i + tail;
}

KVS_F16C void Avx2FromBf16(const uint8_t* in, int64_t n, float* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), w);
  }
  ScalarFromBf16(in + 2 * i, n - i, y + i);
}
// Eight groups at a time: F16C's directed roundings give exactly the software path's
// largest fp16 <= lo and smallest fp16 >= step.
KVS_F16C int64_t F16cGroupParams(const float* lo, const float* hi, int64_t n, float levels,
                                 uint8_t* params, float* offset, float* inv) {
  const __m256 max = _mm256_set1_ps(kHalfMax), min = _mm256_set1_ps(-kHalfMax);
  const __m256 lv = _mm256_set1_ps(levels), one = _mm256_set1_ps(1.0f);
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 l = _mm256_loadu_ps(lo + i), h = _mm256_loadu_ps(hi + i);
    const __m128i off_h = _mm256_cvtps_ph(l, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m256 off = _mm256_cvtph_ps(off_h);
    const __m256 step = _mm256_div_ps(_mm256_sub_ps(h, off), lv);
    const __m256 bad = _mm256_or_ps(
        _mm256_or_ps(_mm256_cmp_ps(l, min, _CMP_LT_OQ), _mm256_cmp_ps(h, max, _CMP_GT_OQ)),
        _mm256_cmp_ps(step, max, _CMP_NLE_UQ));
    if (_mm256_movemask_ps(bad) != 0) break;  // the software path finds which
    const __m128i scale_h = _mm256_cvtps_ph(step, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    const __m256 scale = _mm256_cvtph_ps(scale_h);
    const __m256 r =
        _mm256_and_ps(_mm256_div_ps(one, scale), _mm256_cmp_ps(scale, zero, _CMP_GT_OQ));
    _mm256_storeu_ps(offset + i, off);
    _mm256_storeu_ps(inv + i, r);
    // Interleave: scale, offset per group, as 16-bit pairs.
    _mm_storeu_si128(reinterpret_cast<__m128i*>(params + 4 * i),
                     _mm_unpacklo_epi16(scale_h, off_h));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(params + 4 * i + 16),
                     _mm_unpackhi_epi16(scale_h, off_h));
  }
  const int64_t tail =
      ScalarGroupParams(lo + i, hi + i, n - i, levels, params + 4 * i, offset + i, inv + i);
  return tail < 0 ? -1 : i + tail;
}
#else
// No F16C path on this target: the names lead to the software conversions.
constexpr auto F16cGroupParams = ScalarGroupParams;
constexpr auto F16cToHalf = ScalarToHalf;
constexpr auto F16cFromHalf = ScalarFromHalf;
constexpr auto Avx2ToBf16 = ScalarToBf16;
constexpr auto Avx2FromBf16 = ScalarFromBf16;
#endif

bool UseF16c() { return Path().load(std::memory_order_relaxed) == FloatPath::kF16c; }

}  // namespace

FloatPath ActiveFloatPath() { return Path().load(); }

FloatPath ForceFloatPath(FloatPath path) {
  if (path == FloatPath::kF16c && !CpuHasF16c()) path = FloatPath::kScalar;
  Path().store(path);
  return path;
}

int64_t FloatsToHalf(const float* x, int64_t n, uint8_t* out) {
  return UseF16c() ? F16cToHalf(x, n, out) : ScalarToHalf(x, n, out);
}

void HalfsToFloats(const uint8_t* in, int64_t n, float* y) {
  UseF16c() ? F16cFromHalf(in, n, y) : ScalarFromHalf(in, n, y);
}

int64_t FloatsToBf16(const float* x, int64_t n, uint8_t* out) {
  return UseF16c() ? Avx2ToBf16(x, n, out) : ScalarToBf16(x, n, out);
}

void FloatsToBf16Rounded(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n;) {
    const int64_t bad = FloatsToBf16(x + i, n - i, out + 2 * i);
    if (bad < 0) return;
    const uint16_t b = FloatToBf16(x[i + bad]);
    std::memcpy(out + 2 * (i + bad), &b, 2);
    i += bad + 1;
  }
}

void Bf16sToFloats(const uint8_t* in, int64_t n, float* y) {
  UseF16c() ? Avx2FromBf16(in, n, y) : ScalarFromBf16(in, n, y);
}

int64_t GroupParams(const float* lo, const float* hi, int64_t n, float levels, uint8_t* params,
                    float* offset, float* inv) {
  return UseF16c() ? F16cGroupParams(lo, hi, n, levels, params, offset, inv)
                   : ScalarGroupParams(lo, hi, n, levels, params, offset, inv);
}

}  // namespace kvstream::codec
