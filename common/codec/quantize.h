// Encoding of one KV tensor [heads, tokens, head_dim] under a TensorSpec.
//
// Byte layout of an encoded tensor (all little endian):
//   raw        the source elements as they are (f32, f16 or bf16)
//   f16/bf16   one 16-bit value per element
//   int b      params: one (scale fp16, offset fp16) pair per group, groups in order
//                per-token    (head, token)            -> heads * tokens groups
//                per-channel  (head, channel)          -> heads * head_dim groups
//                group G      (head, token, block)     -> heads * tokens * ceil(head_dim/G)
//              codes: every element's b-bit code, densely packed (bitpack.h) in
//                [head, token, channel] order: ceil(numel * b / 8) bytes
//              value = code * scale + offset
//   +svdR      the factors A [heads, tokens, r] then B [heads, r, head_dim], each encoded
//              as above with the same spec; r = min(R, tokens, head_dim); X ~= A B
//   +adG, +sd  as without the transform (the deltas replace the values)
//
// So the wire size is a closed formula of the spec and the shape: EncodedTensorBytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "common/codec/spec.h"

namespace kvstream::codec {

struct TensorShape {
  int64_t heads = 0;
  int64_t tokens = 0;
  int64_t dim = 0;
  int64_t numel() const { return heads * tokens * dim; }
};

// Exact encoded size in bytes. `spec` must be valid (TensorSpec::Validate).
uint64_t EncodedTensorBytes(const TensorSpec& spec, const TensorShape& shape, DType source);

// Number of (scale, offset) groups of an int spec over `shape` (0 for other formats).
uint64_t QuantGroups(const TensorSpec& spec, const TensorShape& shape);

// Encodes `src` (numel elements of `source` dtype, contiguous [heads, tokens, dim]) into
// exactly EncodedTensorBytes(...) bytes at `out`. Fails on non-finite input, or on values
// that fp16 scales/offsets (int) or fp16 elements (f16) cannot represent.
absl::Status EncodeTensor(const TensorSpec& spec, const TensorShape& shape, DType source,
                          const void* src, uint8_t* out);

// Decodes `in_size` bytes (must equal EncodedTensorBytes) into float32 `dst` [heads,
// tokens, dim]. Raw decoding is exact for every source dtype.
absl::Status DecodeTensor(const TensorSpec& spec, const TensorShape& shape, DType source,
                          const uint8_t* in, size_t in_size, float* dst);

// Whether DecodeTensorToBf16 takes `spec`: int formats without a transform.
bool DecodesToBf16Directly(const TensorSpec& spec);

// Decodes as DecodeTensor does and rounds to bf16 (FloatsToBf16Rounded) on the way, with
// no float32 tensor in between. `dst` is slot 0 of head 0 in a bf16 tensor [heads,
// head_stride, dim] (head_stride >= tokens; e.g. a cache [heads, capacity, dim] from the
// chunk's first slot on): row (h, t) goes to dst + 2 * (h * head_stride + t) * dim bytes.
// The bits equal DecodeTensor's output converted afterwards.
absl::Status DecodeTensorToBf16(const TensorSpec& spec, const TensorShape& shape, DType source,
                                const uint8_t* in, size_t in_size, uint8_t* dst,
                                int64_t head_stride);

// Scale and offset the encoder stores for a group with values in [lo, hi]: the offset is
// lo rounded down to fp16, the scale (hi - offset) / (2^bits - 1) rounded up to fp16, so
// every value lies within the representable range and decodes within scale/2.
struct QuantParams {
  uint16_t scale_h;
  uint16_t offset_h;
};
absl::Status ComputeQuantParams(float lo, float hi, int bits, QuantParams* out);

}  // namespace kvstream::codec
