// Chunk encode/decode: the KV tensors of a layer range and a run of kept tokens, packed
// under one LayerSpec, entropy coded, checksummed, in a kvstream.v1.KvChunk.
//
// The decoder treats every field as untrusted: it checks the header against the
// session's limits, the CRC, the sizes implied by the spec, and the positions before it
// touches the payload, and it never reads out of bounds.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/codec/payload.h"
#include "common/codec/spec.h"
#include "kvstream/v1/kv_chunk.pb.h"

namespace kvstream::codec {

struct ChunkMeta {
  std::string session_id;
  uint64_t seq = 0;
  int layer_begin = 0;  // layers [layer_begin, layer_end)
  int layer_end = 0;
  int token_begin = 0;             // index of the first token in the session's kept list
  std::vector<int32_t> positions;  // original position ids, strictly increasing
  int kv_heads = 0;
  int head_dim = 0;
  DType source_dtype = DType::kF32;
  LayerSpec spec;
  int zstd_level = 0;

  int num_layers() const { return layer_end - layer_begin; }
  int num_tokens() const { return static_cast<int>(positions.size()); }
};

// One layer's tensors for the chunk's tokens, each [kv_heads, num_tokens, head_dim],
// contiguous, in the chunk's source dtype.
struct LayerKv {
  const void* k = nullptr;
  const void* v = nullptr;
};

// Payload size before the entropy stage (the sum of EncodedTensorBytes over the layers).
uint64_t ChunkRawBytes(const ChunkMeta& meta);

// Size of the same tensors stored as 16-bit floats: the "raw KV bytes" every compression
// ratio is quoted against.
uint64_t ChunkBytes16(const ChunkMeta& meta);

absl::StatusOr<kvstream::v1::KvChunk> EncodeChunk(const ChunkMeta& meta,
                                                  absl::Span<const LayerKv> layers);

// What the receiver knows about the session; a chunk outside it is rejected.
struct ChunkLimits {
  std::string session_id;  // empty: any
  int num_layers = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int64_t max_position = 0;                   // positions must be < this
  uint64_t max_decoded_bytes = 256ull << 20;  // cap on the decoded float tensors
};

struct DecodedChunk {
  ChunkMeta meta;
  std::vector<float> kv;  // [num_layers][2 (K, V)][kv_heads][num_tokens][head_dim]

  size_t tensor_numel() const {
    return static_cast<size_t>(meta.kv_heads) * meta.num_tokens() * meta.head_dim;
  }
  const float* k(int layer_offset) const { return kv.data() + (2 * layer_offset) * tensor_numel(); }
  const float* v(int layer_offset) const {
    return kv.data() + (2 * layer_offset + 1) * tensor_numel();
  }
};

// Errors: DATA_LOSS for a CRC mismatch; INVALID_ARGUMENT for everything malformed; the
// message names the field, what was expected and what was found.
//
// ValidateChunk checks the header, the sizes the spec implies, the CRC and the positions,
// and returns the header without decoding tensors (so a receiver can size its buffer).
absl::StatusOr<ChunkMeta> ValidateChunk(const kvstream::v1::KvChunk& chunk,
                                        const ChunkLimits& limits);
// The same for a chunk whose payload is held apart from it (its `payload` field is not
// read): a receiver keeping the bytes in the buffers they arrived in.
absl::StatusOr<ChunkMeta> ValidateChunk(const kvstream::v1::KvChunk& chunk,
                                        const PayloadView& payload, const ChunkLimits& limits);

// Floats the chunk decodes to: num_layers * 2 * kv_heads * num_tokens * head_dim.
size_t ChunkNumel(const ChunkMeta& meta);

// Validates, then decodes into `out` ([num_layers][2][kv_heads][num_tokens][head_dim],
// exactly ChunkNumel floats), e.g. straight into a receiver's staging buffer.
absl::Status DecodeChunkInto(const kvstream::v1::KvChunk& chunk, const ChunkLimits& limits,
                             ChunkMeta* meta, absl::Span<float> out);

// Decodes the payload of a chunk ValidateChunk accepted (as `meta`) into `out`
// (exactly ChunkNumel floats): for a receiver that validated first.
absl::Status DecodeValidated(const kvstream::v1::KvChunk& chunk, const ChunkMeta& meta,
                             absl::Span<float> out);

// A validated chunk's payload (decompressed when it went through zstd), decoded a layer
// at a time so a receiver's scratch space is one layer, not the whole chunk. Refers to
// the payload and meta it was opened on: they must outlive it. A tensor that straddles
// two of the payload's ranges is copied into scratch space first, so one ChunkPayload
// decodes on one thread at a time.
class ChunkPayload {
 public:
  static absl::StatusOr<ChunkPayload> Open(const kvstream::v1::KvChunk& chunk,
                                           const ChunkMeta& meta);
  static absl::StatusOr<ChunkPayload> Open(const PayloadView& payload, const ChunkMeta& meta);
  // Layer `i` of the chunk (0-based within it) into `k` and `v`, each
  // [kv_heads][num_tokens][head_dim] floats.
  absl::Status DecodeLayer(int i, float* k, float* v) const;
  // Whether DecodeLayerToBf16 takes this chunk (its K and V specs are int, untransformed).
  bool DecodesToBf16Directly() const;
  // Layer `i` straight into bf16 rows (DecodeTensorToBf16): head h, token t of K at
  // k + 2 * (h * head_stride + t) * head_dim bytes, and of V likewise at `v`.
  absl::Status DecodeLayerToBf16(int i, uint8_t* k, uint8_t* v, int64_t head_stride) const;

 private:
  // Layer i's encoded K (v: its V), contiguous, or why there is no such layer.
  absl::StatusOr<const uint8_t*> Tensor(int i, bool v) const;

  const ChunkMeta* meta_ = nullptr;
  std::shared_ptr<std::string> decompressed_;
  PayloadView raw_;
  uint64_t k_bytes_ = 0, v_bytes_ = 0;
  mutable std::string scratch_;  // a tensor that straddles two ranges of raw_
};

// When a validated chunk's payload (of `payload_size` bytes) is its tensors as they were
// (raw specs, no entropy stage): the bytes of one tensor, layer i's K at 2 * i times
// that, its V right after, each [kv_heads][num_tokens][head_dim] in `meta.source_dtype`.
// Else 0. A receiver whose cache has that dtype copies them without decoding.
uint64_t RawTensorBytes(const ChunkMeta& meta, uint64_t payload_size);

// Validates, then decodes into `out`, resized to ChunkNumel (its capacity is reused, so a
// receiver decoding many chunks allocates once).
absl::Status DecodeChunkInto(const kvstream::v1::KvChunk& chunk, const ChunkLimits& limits,
                             ChunkMeta* meta, std::vector<float>* out);

// Validates and decodes into a new buffer.
absl::StatusOr<DecodedChunk> DecodeChunk(const kvstream::v1::KvChunk& chunk,
                                         const ChunkLimits& limits);

void SpecToProto(const TensorSpec& spec, kvstream::v1::TensorSpec* out);
absl::StatusOr<TensorSpec> SpecFromProto(const kvstream::v1::TensorSpec& in);

}  // namespace kvstream::codec
