// Bulk fp16 / bf16 conversions for the codec's float formats: F16C + AVX2 where the CPU
// has them (detected once, at first use), the software conversions of half.h otherwise.
// Both paths give identical bits (round to nearest even); tests compare them.
#pragma once

#include <cstdint>

namespace kvstream::codec {

enum class FloatPath { kScalar, kF16c };

// The path in use: kF16c when the CPU has F16C and AVX2, unless forced.
FloatPath ActiveFloatPath();
// Forces a path (tests run both on one machine); kF16c falls back to kScalar where the
// CPU lacks it. Returns the path now active.
FloatPath ForceFloatPath(FloatPath path);

// x[0..n) to little-endian fp16. Returns the index of the first element whose fp16 value
// is not finite (outside +-65504 after rounding, infinite or NaN), or -1 when all are.
// `out` holds the converted elements before that index.
int64_t FloatsToHalf(const float* x, int64_t n, uint8_t* out);
void HalfsToFloats(const uint8_t* in, int64_t n, float* y);
// The same for bfloat16: the first element that is not finite, or -1.
int64_t FloatsToBf16(const float* x, int64_t n, uint8_t* out);
void Bf16sToFloats(const uint8_t* in, int64_t n, float* y);
// Every element of x[0..n) to bfloat16, those FloatsToBf16 stops at (not finite) as
// torch rounds them (FloatToBf16): what a bf16 cache holds for float32 values written in.
void FloatsToBf16Rounded(const float* x, int64_t n, uint8_t* out);

// Quantization parameters of n groups, each with finite range [lo[i], hi[i]], at
// `levels` = 2^bits - 1: the fp16 offset is lo rounded down, the fp16 scale
// (hi - offset) / levels rounded up (common/codec/quantize.h), stored as the four bytes
// scale, offset (little-endian) at params + 4 i; `offset` and `inv` (1 / scale, or 0
// for a zero scale) get them as floats. Returns the index of the first group fp16
// cannot hold (|lo| or |hi| above 65504, or a scale above it), whose parameters and
// those after it are not written, or -1 when every group's are.
int64_t GroupParams(const float* lo, const float* hi, int64_t n, float levels, uint8_t* params,
                    float* offset, float* inv);

}  // namespace kvstream::codec
