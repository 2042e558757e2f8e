#include "common/codec/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/codec/bitpack.h"
#include "common/codec/float_formats.h"
#include "common/codec/half.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvstream::codec {
namespace {

inline uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

struct MinMax {
  float lo;
  float hi;
  bool has_nan;
};

// The hot kernels are compiled twice (AVX2 and baseline x86-64) and picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KVS_KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define KVS_KERNEL
#endif

// Min and max of x[0..n). NaN is reported, not absorbed: the min/max reductions may be
// reordered (omp simd), the NaN test makes that safe.
KVS_KERNEL MinMax RangeOf(const float* x, int64_t n) {
  float lo = std::numeric_limits<float>::infinity();
  float hi = -lo;
  int nan = 0;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    nan |= v != v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return {lo, hi, nan != 0};
}

// q = round((x - offset) / scale), clamped to [0, levels]; NaN cannot reach here.
KVS_KERNEL void QuantizeRun(const float* __restrict x, int64_t n, float offset, float inv,
                            float levels, uint8_t* __restrict q) {
  for (int64_t i = 0; i < n; ++i) {
    float v = (x[i] - offset) * inv;
    v = v > 0.0f ? v : 0.0f;
    v = v < levels ? v : levels;
    // v is clamped to [0, levels]: adding 0.5 and truncating rounds half up, and stays
    // vectorizable where lround would not.
    q[i] =
        static_cast<uint8_t>(static_cast<int>(v + 0.5f));  // NOLINT(bugprone-incorrect-roundings)
  }
}

KVS_KERNEL void DequantizeRun(const uint8_t* __restrict q, int64_t n, float scale, float offset,
                              float* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(q[i]) * scale + offset;
}

// Per-channel kernels: one token's row of D channels against per-channel state.
// Folds the row into the running per-channel min and max; returns nonzero on a NaN.
KVS_KERNEL int ChannelRangeRow(const float* __restrict row, int64_t D, float* __restrict lo,
                               float* __restrict hi) {
  int nan = 0;
  for (int64_t d = 0; d < D; ++d) {
    const float v = row[d];
    nan |= v != v;
    lo[d] = v < lo[d] ? v : lo[d];
    hi[d] = v > hi[d] ? v : hi[d];
  }
  return nan;
}

KVS_KERNEL void QuantizeChannels(const float* __restrict row, int64_t D,
                                 const float* __restrict off, const float* __restrict inv,
                                 float levels, uint8_t* __restrict q) {
  for (int64_t d = 0; d < D; ++d) {
    float v = (row[d] - off[d]) * inv[d];
    v = v > 0.0f ? v : 0.0f;
    v = v < levels ? v : levels;
    q[d] = static_cast<uint8_t>(static_cast<int>(v + 0.5f));  // NOLINT: as in QuantizeRun
  }
}

KVS_KERNEL void DequantizeChannels(const uint8_t* __restrict q, int64_t D,
                                   const float* __restrict scale, const float* __restrict off,
                                   float* __restrict y) {
  for (int64_t d = 0; d < D; ++d) y[d] = static_cast<float>(q[d]) * scale[d] + off[d];
}

inline void LoadParams(const uint8_t* p, float* scale, float* offset) {
  *scale = HalfToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8)));
  *offset = HalfToFloat(static_cast<uint16_t>(p[2] | (p[3] << 8)));
}

absl::Status NonFinite(int64_t group) {
  return absl::InvalidArgumentError(
      absl::StrCat("quantize: group ", group, " holds a non-finite value (NaN or inf)"));
}

// ---- int formats ---------------------------------------------------------------------

// Parameters of groups [0, n) from their ranges: GroupParams (eight at a time where the CPU
// has F16C); for a group fp16 cannot hold, ComputeQuantParams says why.
absl::Status BlockParams(const float* lo, const float* hi, int64_t n, int bits, uint8_t* params,
                         float* offset, float* inv) {
  const float levels = static_cast<float>((1 << bits) - 1);
  const int64_t bad = GroupParams(lo, hi, n, levels, params, offset, inv);
  if (bad < 0) return absl::OkStatus();
  QuantParams qp;
  RETURN_IF_ERROR(ComputeQuantParams(lo[bad], hi[bad], bits, &qp));
  return absl::InternalError(absl::StrCat("quantize: group ", bad, "'s range [", lo[bad], ", ",
                                          hi[bad], "] was refused, then accepted"));
}

// Per-token and grouped: for a block of rows, every group's range, then their parameters
// at once, then the codes.
absl::Status EncodeRows(const TensorSpec& spec, const TensorShape& s, const float* x,
                        uint8_t* params, BitWriter& writer) {
  const int64_t D = s.dim, rows = s.heads * s.tokens;
  const int64_t G = spec.axis == Axis::kGroup ? std::min<int64_t>(spec.group_size, D) : D;
  const auto n_blocks = static_cast<int64_t>(CeilDiv(D, G));
  const float levels = static_cast<float>((1 << spec.bits) - 1);
  constexpr int64_t kRows = 64;
  const auto block = static_cast<size_t>(kRows * n_blocks);
  std::vector<float> lo(block), hi(block), off(block), inv(block);
  std::vector<uint8_t> q(static_cast<size_t>(D));
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t groups = std::min(kRows, rows - r0) * n_blocks;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t start = (g % n_blocks) * G;
      const MinMax mm = RangeOf(x + (r0 + g / n_blocks) * D + start, std::min(G, D - start));
      if (mm.has_nan || !std::isfinite(mm.lo) || !std::isfinite(mm.hi)) {
        return NonFinite(r0 * n_blocks + g);
      }
      lo[g] = mm.lo;
      hi[g] = mm.hi;
    }
    RETURN_IF_ERROR(BlockParams(lo.data(), hi.data(), groups, spec.bits, params + 4 * r0 * n_blocks,
                                off.data(), inv.data()));
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t start = (g % n_blocks) * G;
      QuantizeRun(x + (r0 + g / n_blocks) * D + start, std::min(G, D - start), off[g], inv[g],
                  levels, q.data() + start);
      if ((g + 1) % n_blocks == 0) writer.Put(q.data(), static_cast<size_t>(D));
    }
  }
  return absl::OkStatus();
}

absl::Status EncodeInt(const TensorSpec& spec, const TensorShape& s, const float* x, uint8_t* out) {
  const int64_t H = s.heads, T = s.tokens, D = s.dim;
  const float levels = static_cast<float>((1 << spec.bits) - 1);
  uint8_t* params = out;
  BitWriter writer(out + QuantGroups(spec, s) * 4, spec.bits);
  std::vector<uint8_t> q(static_cast<size_t>(D));

  if (spec.axis == Axis::kPerChannel) {
    std::vector<float> lo(D), hi(D), off(D), inv(D);
    for (int64_t h = 0; h < H; ++h) {
      const float* xh = x + h * T * D;
      std::fill(lo.begin(), lo.end(), std::numeric_limits<float>::infinity());
      std::fill(hi.begin(), hi.end(), -std::numeric_limits<float>::infinity());
      int nan = 0;
      for (int64_t t = 0; t < T; ++t) nan |= ChannelRangeRow(xh + t * D, D, lo.data(), hi.data());
      if (nan != 0) return NonFinite(h * D);
      for (int64_t d = 0; d < D; ++d) {
        if (!std::isfinite(lo[d]) || !std::isfinite(hi[d])) return NonFinite(h * D + d);
      }
      RETURN_IF_ERROR(BlockParams(lo.data(), hi.data(), D, spec.bits, params + h * D * 4,
                                  off.data(), inv.data()));
      for (int64_t t = 0; t < T; ++t) {
        QuantizeChannels(xh + t * D, D, off.data(), inv.data(), levels, q.data());
        writer.Put(q.data(), static_cast<size_t>(D));
      }
    }
  } else {
    RETURN_IF_ERROR(EncodeRows(spec, s, x, params, writer));
  }
  writer.Finish();
  return absl::OkStatus();
}

// The rows of an int tensor (row r = head * tokens + token), decoded in order a block
// of rows at a time.
class IntRows {
 public:
  IntRows(const TensorSpec& spec, const TensorShape& s, const uint8_t* in, const uint8_t* end)
      : per_channel_(spec.axis == Axis::kPerChannel),
        tokens_(s.tokens),
        dim_(s.dim),
        group_(spec.axis == Axis::kGroup ? std::min<int64_t>(spec.group_size, s.dim) : s.dim),
        blocks_(static_cast<int64_t>(CeilDiv(s.dim, group_))),
        params_(in),
        reader_(in + QuantGroups(spec, s) * 4, end, spec.bits),
        q_(static_cast<size_t>(s.dim)) {
    if (per_channel_) {
      scale_.resize(s.dim);
      offset_.resize(s.dim);
    }
  }

  // The next `n` rows into y [n, dim].
  void Next(int64_t n, float* y) {
    for (int64_t i = 0; i < n; ++i, ++row_) {
      reader_.Get(q_.data(), static_cast<size_t>(dim_));
      float* out = y + i * dim_;
      if (per_channel_) {
        if (row_ / tokens_ != head_) LoadHead(row_ / tokens_);
        DequantizeChannels(q_.data(), dim_, scale_.data(), offset_.data(), out);
        continue;
      }
      for (int64_t j = 0; j < blocks_; ++j) {
        const int64_t start = j * group_, len = std::min(group_, dim_ - start);
        float scale, offset;
        LoadParams(params_ + (row_ * blocks_ + j) * 4, &scale, &offset);
        DequantizeRun(q_.data() + start, len, scale, offset, out + start);
      }
    }
  }

 private:
  void LoadHead(int64_t h) {
    head_ = h;
    for (int64_t d = 0; d < dim_; ++d) {
      LoadParams(params_ + (h * dim_ + d) * 4, &scale_[d], &offset_[d]);
    }
  }

  const bool per_channel_;
  const int64_t tokens_, dim_, group_, blocks_;
  const uint8_t* params_;
  BitReader reader_;
  std::vector<uint8_t> q_;
  std::vector<float> scale_, offset_;  // per channel, of head_
  int64_t row_ = 0, head_ = -1;
};

void DecodeInt(const TensorSpec& spec, const TensorShape& s, const uint8_t* in, const uint8_t* end,
               float* y) {
  IntRows(spec, s, in, end).Next(s.heads * s.tokens, y);
}

// ---- float formats -------------------------------------------------------------------

absl::Status EncodeF16(const float* x, int64_t n, uint8_t* out) {
  if (const int64_t i = FloatsToHalf(x, n, out); i >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("f16: element ", i, " = ", x[i], " is outside the fp16 range (|x| <= 65504)"));
  }
  return absl::OkStatus();
}

absl::Status EncodeBF16(const float* x, int64_t n, uint8_t* out) {
  if (const int64_t i = FloatsToBf16(x, n, out); i >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bf16: element ", i, " = ", x[i], " is not finite"));
  }
  return absl::OkStatus();
}

void ToFloat(DType source, const void* src, int64_t n, float* y) {
  const auto* b = static_cast<const uint8_t*>(src);
  switch (source) {
    case DType::kF32:
      std::memcpy(y, src, static_cast<size_t>(n) * 4);
      break;
    case DType::kF16:
      HalfsToFloats(b, n, y);
      break;
    case DType::kBF16:
      Bf16sToFloats(b, n, y);
      break;
  }
}

// Encodes floats with the spec's format, ignoring its transform.
absl::Status EncodeFormat(const TensorSpec& spec, const TensorShape& s, const float* x,
                          uint8_t* out) {
  switch (spec.format) {
    case Format::kF16:
      return EncodeF16(x, s.numel(), out);
    case Format::kBF16:
      return EncodeBF16(x, s.numel(), out);
    case Format::kInt:
      return EncodeInt(spec, s, x, out);
    case Format::kRaw:
      break;
  }
  return absl::InternalError("raw format has no float encoder");
}

void DecodeFormat(const TensorSpec& spec, const TensorShape& s, DType source, const uint8_t* in,
                  const uint8_t* end, float* y) {
  switch (spec.format) {
    case Format::kRaw:
      ToFloat(source, in, s.numel(), y);
      return;
    case Format::kF16:
      ToFloat(DType::kF16, in, s.numel(), y);
      return;
    case Format::kBF16:
      ToFloat(DType::kBF16, in, s.numel(), y);
      return;
    case Format::kInt:
      DecodeInt(spec, s, in, end, y);
      return;
  }
}

// ---- transforms ----------------------------------------------------------------------

// CacheGen-style anchor delta: within each run of g tokens, every token but the first
// becomes its difference to the first (the anchor), which is kept as is.
void AnchorDelta(const TensorShape& s, int g, float* x, bool inverse) {
  const int64_t D = s.dim;
  for (int64_t h = 0; h < s.heads; ++h) {
    float* xh = x + h * s.tokens * D;
    for (int64_t t = 0; t < s.tokens; ++t) {
      const int64_t a = t - t % g;
      if (a == t) continue;
      for (int64_t d = 0; d < D; ++d) {
        xh[t * D + d] += inverse ? xh[a * D + d] : -xh[a * D + d];
      }
    }
  }
}

// Sequential delta: token t becomes x[t] - x[t-1]. The inverse is a running sum, so
// quantization errors accumulate along the sequence (the effect the research measured).
void SeqDelta(const TensorShape& s, float* x, bool inverse) {
  const int64_t D = s.dim;
  for (int64_t h = 0; h < s.heads; ++h) {
    float* xh = x + h * s.tokens * D;
    if (inverse) {
      for (int64_t t = 1; t < s.tokens; ++t) {
        for (int64_t d = 0; d < D; ++d) xh[t * D + d] += xh[(t - 1) * D + d];
      }
    } else {
      for (int64_t t = s.tokens - 1; t >= 1; --t) {
        for (int64_t d = 0; d < D; ++d) xh[t * D + d] -= xh[(t - 1) * D + d];
      }
    }
  }
}

// Eigen-decomposition of a symmetric n x n matrix by cyclic Jacobi rotations. On return
// `a` is (near) diagonal with the eigenvalues, `v` holds the eigenvectors as columns.
void JacobiEigen(int n, std::vector<double>& a, std::vector<double>& v) {
  v.assign(static_cast<size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i) v[i * n + i] = 1.0;
  for (int sweep = 0; sweep < 50; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (int p = 0; p < n; ++p) {
      diag += a[p * n + p] * a[p * n + p];
      for (int q = p + 1; q < n; ++q) off += a[p * n + q] * a[p * n + q];
    }
    if (off <= 1e-22 * diag || off == 0.0) break;
    for (int p = 0; p < n; ++p) {
      for (int q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (std::abs(apq) < 1e-300) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1.0 / std::sqrt(t * t + 1), sn = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - sn * akq;
          a[k * n + q] = sn * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - sn * aqk;
          a[q * n + k] = sn * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = v[k * n + p], vkq = v[k * n + q];
          v[k * n + p] = c * vkp - sn * vkq;
          v[k * n + q] = sn * vkp + c * vkq;
        }
      }
    }
  }
}

int64_t SvdRank(const TensorSpec& spec, const TensorShape& s) {
  return std::min<int64_t>({spec.transform_param, s.tokens, s.dim});
}

// Truncated SVD per head through the eigenvectors of X^T X: X [T, D] ~= A B with
// B = top-r right singular vectors [r, D] and A = X B^T [T, r].
void SvdFactors(const TensorShape& s, int64_t r, const float* x, float* a_out, float* b_out) {
  const int64_t T = s.tokens, D = s.dim;
  std::vector<double> c(static_cast<size_t>(D * D)), v;
  for (int64_t h = 0; h < s.heads; ++h) {
    const float* xh = x + h * T * D;
    std::fill(c.begin(), c.end(), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      const float* row = xh + t * D;
      for (int64_t i = 0; i < D; ++i) {
        for (int64_t j = i; j < D; ++j) c[i * D + j] += static_cast<double>(row[i]) * row[j];
      }
    }
    for (int64_t i = 0; i < D; ++i) {
      for (int64_t j = 0; j < i; ++j) c[i * D + j] = c[j * D + i];
    }
    JacobiEigen(static_cast<int>(D), c, v);
    std::vector<int64_t> order(static_cast<size_t>(D));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t i, int64_t j) { return c[i * D + i] > c[j * D + j]; });
    float* bh = b_out + h * r * D;
    for (int64_t k = 0; k < r; ++k) {
      for (int64_t d = 0; d < D; ++d) bh[k * D + d] = static_cast<float>(v[d * D + order[k]]);
    }
    float* ah = a_out + h * T * r;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t k = 0; k < r; ++k) {
        double acc = 0.0;
        for (int64_t d = 0; d < D; ++d) acc += static_cast<double>(xh[t * D + d]) * bh[k * D + d];
        ah[t * r + k] = static_cast<float>(acc);
      }
    }
  }
}

}  // namespace

absl::Status ComputeQuantParams(float lo, float hi, int bits, QuantParams* out) {
  uint8_t p[4];
  float offset = 0, inv = 0;
  if (GroupParams(&lo, &hi, 1, static_cast<float>((1 << bits) - 1), p, &offset, &inv) < 0) {
    out->scale_h = static_cast<uint16_t>(p[0] | (p[1] << 8));
    out->offset_h = static_cast<uint16_t>(p[2] | (p[3] << 8));
    return absl::OkStatus();
  }
  if (lo < -kHalfMax || hi > kHalfMax) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quantize: values in [", lo, ", ", hi, "] exceed the fp16 offset range (|x| <= 65504)"));
  }
  return absl::InvalidArgumentError(absl::StrCat("quantize: range [", lo, ", ", hi, "] at ", bits,
                                                 " bits needs a scale beyond fp16"));
}

uint64_t QuantGroups(const TensorSpec& spec, const TensorShape& s) {
  if (spec.format != Format::kInt) return 0;
  const auto H = static_cast<uint64_t>(s.heads), T = static_cast<uint64_t>(s.tokens),
             D = static_cast<uint64_t>(s.dim);
  switch (spec.axis) {
    case Axis::kPerToken:
      return H * T;
    case Axis::kPerChannel:
      return H * D;
    case Axis::kGroup:
      return H * T * CeilDiv(D, static_cast<uint64_t>(spec.group_size));
  }
  return 0;
}

uint64_t EncodedTensorBytes(const TensorSpec& spec, const TensorShape& s, DType source) {
  if (spec.transform == Transform::kSvd) {
    TensorSpec inner = spec;
    inner.transform = Transform::kNone;
    inner.transform_param = 0;
    const int64_t r = SvdRank(spec, s);
    return EncodedTensorBytes(inner, {s.heads, s.tokens, r}, source) +
           EncodedTensorBytes(inner, {s.heads, r, s.dim}, source);
  }
  const auto n = static_cast<uint64_t>(s.numel());
  switch (spec.format) {
    case Format::kRaw:
      return n * static_cast<uint64_t>(DTypeBytes(source));
    case Format::kF16:
    case Format::kBF16:
      return n * 2;
    case Format::kInt:
      return QuantGroups(spec, s) * 4 + PackedBytes(n, spec.bits);
  }
  return 0;
}

absl::Status EncodeTensor(const TensorSpec& spec, const TensorShape& s, DType source,
                          const void* src, uint8_t* out) {
  RETURN_IF_ERROR(spec.Validate());
  if (spec.format == Format::kRaw) {
    std::memcpy(out, src, static_cast<size_t>(s.numel()) * DTypeBytes(source));
    return absl::OkStatus();
  }
  // Float view of the input: zero-copy for f32 without a transform.
  std::vector<float> scratch;
  const float* x = static_cast<const float*>(src);
  if (source != DType::kF32 || spec.transform != Transform::kNone) {
    scratch.resize(static_cast<size_t>(s.numel()));
    ToFloat(source, src, s.numel(), scratch.data());
    x = scratch.data();
  }
  switch (spec.transform) {
    case Transform::kNone:
      break;
    case Transform::kAnchorDelta:
      AnchorDelta(s, spec.transform_param, scratch.data(), false);
      break;
    case Transform::kSeqDelta:
      SeqDelta(s, scratch.data(), false);
      break;
    case Transform::kSvd: {
      for (float v : scratch) {
        if (!std::isfinite(v)) return NonFinite(0);
      }
      TensorSpec inner = spec;
      inner.transform = Transform::kNone;
      inner.transform_param = 0;
      const int64_t r = SvdRank(spec, s);
      const TensorShape sa{s.heads, s.tokens, r}, sb{s.heads, r, s.dim};
      std::vector<float> a(static_cast<size_t>(sa.numel())), b(static_cast<size_t>(sb.numel()));
      SvdFactors(s, r, x, a.data(), b.data());
      RETURN_IF_ERROR(EncodeFormat(inner, sa, a.data(), out));
      return EncodeFormat(inner, sb, b.data(), out + EncodedTensorBytes(inner, sa, source));
    }
  }
  return EncodeFormat(spec, s, x, out);
}

namespace {

absl::Status CheckShape(const TensorSpec& spec, const TensorShape& s) {
  if (s.heads < 1 || s.tokens < 1 || s.dim < 1) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", spec.ToString(), " [", s.heads, ", ",
                                                   s.tokens, ", ", s.dim,
                                                   "]: every dimension must be at least 1"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DecodeTensor(const TensorSpec& spec, const TensorShape& s, DType source,
                          const uint8_t* in, size_t in_size, float* dst) {
  RETURN_IF_ERROR(spec.Validate());
  RETURN_IF_ERROR(CheckShape(spec, s));
  const uint64_t expected = EncodedTensorBytes(spec, s, source);
  if (in_size != expected) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", spec.ToString(), " [", s.heads, ", ",
                                                   s.tokens, ", ", s.dim, "]: expected ", expected,
                                                   " bytes, found ", in_size));
  }
  const uint8_t* end = in + in_size;
  if (spec.transform == Transform::kSvd) {
    TensorSpec inner = spec;
    inner.transform = Transform::kNone;
    inner.transform_param = 0;
    const int64_t r = SvdRank(spec, s);
    const TensorShape sa{s.heads, s.tokens, r}, sb{s.heads, r, s.dim};
    std::vector<float> a(static_cast<size_t>(sa.numel())), b(static_cast<size_t>(sb.numel()));
    const uint64_t a_bytes = EncodedTensorBytes(inner, sa, source);
    DecodeFormat(inner, sa, source, in, in + a_bytes, a.data());
    DecodeFormat(inner, sb, source, in + a_bytes, end, b.data());
    for (int64_t h = 0; h < s.heads; ++h) {
      for (int64_t t = 0; t < s.tokens; ++t) {
        float* row = dst + (h * s.tokens + t) * s.dim;
        std::fill(row, row + s.dim, 0.0f);
        for (int64_t k = 0; k < r; ++k) {
          const float ak = a[(h * s.tokens + t) * r + k];
          const float* bk = b.data() + (h * r + k) * s.dim;
          for (int64_t d = 0; d < s.dim; ++d) row[d] += ak * bk[d];
        }
      }
    }
    return absl::OkStatus();
  }
  DecodeFormat(spec, s, source, in, end, dst);
  if (spec.transform == Transform::kAnchorDelta) AnchorDelta(s, spec.transform_param, dst, true);
  if (spec.transform == Transform::kSeqDelta) SeqDelta(s, dst, true);
  return absl::OkStatus();
}

namespace {

#if defined(__x86_64__)
// Sixteen codes (bytes) to bf16 at out, with the bits DequantizeRun then
// FloatsToBf16Rounded give for finite scale and offset: the product of a code (8 bits)
// and an fp16 scale (11 significant bits) is exact in float32, so only the addition
// rounds, however a compiler contracts DequantizeRun's multiply and add; every value is
// finite (|code * scale + offset| <= 255 * 65504 + 65504) and a multiple of 2^-24 (no
// subnormals), so rounding to nearest even is (bits + 0x7fff + lsb) >> 16 with no special
// cases.
__attribute__((target("avx2"))) inline void SixteenToBf16(__m128i codes, __m256 scale,
                                                          __m256 offset, uint8_t* out) {
  const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff);
  __m256i r[2];
  for (int i = 0; i < 2; ++i) {
    const __m128i part = i == 0 ? codes : _mm_srli_si128(codes, 8);
    const __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part));
    const __m256i bits = _mm256_castps_si256(_mm256_add_ps(_mm256_mul_ps(x, scale), offset));
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
    r[i] = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(half, lsb)), 16);
  }
  // packus interleaves the 128-bit halves; the permute puts the 16 values back in order.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xD8);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), packed);
}

// A per-token row of n codes (n a multiple of 16), 8 or 4 bits each (4: two per byte, the
// first in the low nibble), into bf16.
__attribute__((target("avx2"))) void RowToBf16Avx2(const uint8_t* in, int bits, int64_t n,
                                                   float scale, float offset, uint8_t* out) {
  const __m256 s = _mm256_set1_ps(scale), o = _mm256_set1_ps(offset);
  const __m128i low_nibble = _mm_set1_epi8(0x0f);
  for (int64_t d = 0; d < n; d += 16) {
    __m128i codes;
    if (bits == 8) {
      codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + d));
    } else {
      const __m128i packed = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + d / 2));
      codes = _mm_unpacklo_epi8(_mm_and_si128(packed, low_nibble),
                                _mm_and_si128(_mm_srli_epi16(packed, 4), low_nibble));
    }
    SixteenToBf16(codes, s, o, out + 2 * d);
  }
}
#endif

// Per-token int8 and int4 rows whose codes start on a byte and fill whole vectors, with
// AVX2 (the codec's F16C path): decoded and rounded in registers, a row at a time. Rows
// with a non-finite scale or offset (which no encoder writes) go through DequantizeRun
// and FloatsToBf16Rounded, as the blocked path's rows do.
bool PerTokenToBf16Fast(const TensorSpec& spec, const TensorShape& s, const uint8_t* in,
                        uint8_t* dst, int64_t head_stride) {
#if defined(__x86_64__)
  if (spec.axis != Axis::kPerToken || (spec.bits != 8 && spec.bits != 4) || s.dim % 16 != 0 ||
      ActiveFloatPath() != FloatPath::kF16c) {
    return false;
  }
  const int64_t row_bytes = s.dim * spec.bits / 8;
  const uint8_t* codes = in + s.heads * s.tokens * 4;
  std::vector<uint8_t> unpacked(static_cast<size_t>(s.dim));
  std::vector<float> row(static_cast<size_t>(s.dim));
  for (int64_t h = 0; h < s.heads; ++h) {
    for (int64_t t = 0; t < s.tokens; ++t) {
      const int64_t r = h * s.tokens + t;
      float scale, offset;
      LoadParams(in + r * 4, &scale, &offset);
      uint8_t* out = dst + 2 * (h * head_stride + t) * s.dim;
      if (std::isfinite(scale) && std::isfinite(offset)) {
        RowToBf16Avx2(codes + r * row_bytes, spec.bits, s.dim, scale, offset, out);
        continue;
      }
      UnpackBits(codes + r * row_bytes, static_cast<size_t>(s.dim), spec.bits, unpacked.data());
      DequantizeRun(unpacked.data(), s.dim, scale, offset, row.data());
      FloatsToBf16Rounded(row.data(), s.dim, out);
    }
  }
  return true;
#else
  return false;
#endif
}

}  // namespace

bool DecodesToBf16Directly(const TensorSpec& spec) {
  return spec.format == Format::kInt && spec.transform == Transform::kNone;
}

absl::Status DecodeTensorToBf16(const TensorSpec& spec, const TensorShape& s, DType source,
                                const uint8_t* in, size_t in_size, uint8_t* dst,
                                int64_t head_stride) {
  RETURN_IF_ERROR(spec.Validate());
  RETURN_IF_ERROR(CheckShape(spec, s));
  if (!DecodesToBf16Directly(spec)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", spec.ToString(),
                                                   ": no direct bf16 decoding (int specs without a "
                                                   "transform only); decode to float32"));
  }
  const uint64_t expected = EncodedTensorBytes(spec, s, source);
  if (in_size != expected || head_stride < s.tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", spec.ToString(), " [", s.heads, ", ", s.tokens, ", ", s.dim,
                     "]: expected ", expected, " bytes and a head stride of at least ", s.tokens,
                     ", found ", in_size, " bytes and ", head_stride));
  }
  if (PerTokenToBf16Fast(spec, s, in, dst, head_stride)) return absl::OkStatus();
  // A few KiB of float32 rows at a time, converted while they are still in L1.
  const int64_t block = std::max<int64_t>(1, 2048 / s.dim);
  std::vector<float> rows(static_cast<size_t>(block * s.dim));
  IntRows decoder(spec, s, in, in + in_size);
  for (int64_t h = 0; h < s.heads; ++h) {
    for (int64_t t = 0; t < s.tokens; t += block) {
      const int64_t n = std::min(block, s.tokens - t);
      decoder.Next(n, rows.data());
      FloatsToBf16Rounded(rows.data(), n * s.dim, dst + 2 * (h * head_stride + t) * s.dim);
    }
  }
  return absl::OkStatus();
}

}  // namespace kvstream::codec
