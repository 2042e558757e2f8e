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

}  // namespace kvstream::codec
