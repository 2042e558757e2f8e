// The bridge between a KvCache and the wire: cut a cache into KvChunks under a plan, and
// assemble a cache from chunks on the receiving side. Works through KvCache's export /
// write API (no torch here).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/codec/chunk.h"
#include "common/codec/spec.h"
#include "common/model/model.h"

namespace kvstream::model {

struct ChunkingOptions {
  // Upper bound on a chunk's encoded payload (before zstd); chunks stay far below gRPC's
  // message limit.
  uint64_t max_chunk_bytes = 1 << 20;
  // Layers to encode, [layer_begin, layer_end); layer_end < 0: through the last. A sender
  // that re-plans mid-stream encodes a few layers at a time, each under its own spec.
  int layer_begin = 0;
  int layer_end = -1;
  // Slots to encode, [0, num_slots); -1: all. A sender that encodes during its prefill
  // sends the prompt's slots but the last token's.
  int num_slots = -1;
  // Progressive sending (codec::Plan::tiers): the slots split into runs of these sizes
  // (summing to the slots encoded), sent run by run, every layer of a run before the
  // next; no chunk straddles two runs. Empty: one run.
  std::vector<uint32_t> tier_slots;
  // Threads that encode chunks at once (each chunk is independent of the others; the
  // chunks and their order are the same for any count). 1: the caller's thread alone.
  int threads = 1;
};

struct EncodeStats {
  uint64_t bytes16 = 0;        // the same tensors at 16 bits: the reference size
  uint64_t raw_bytes = 0;      // payload before zstd
  uint64_t wire_bytes = 0;     // payload as sent
  uint64_t message_bytes = 0;  // serialized KvChunk messages (headers, positions included)
  int chunks = 0;
};

// Cuts every layer x every slot of `cache` into chunks. Layers are grouped where the
// plan gives them the same LayerSpec; token runs are sized to max_chunk_bytes. Raw specs
// send the cache's own dtype (bit-exact). Sequence numbers start at `first_seq`.
absl::StatusOr<std::vector<kvstream::v1::KvChunk>> EncodeCache(
    const KvCache& cache, const codec::Plan& plan, const std::string& session_id,
    const ChunkingOptions& options, uint64_t first_seq = 0, EncodeStats* stats = nullptr);

// Rebuilds a cache of `positions.size()` slots from chunks, in any order.
class CacheAssembler {
 public:
  // `positions`: the original position of every slot the sender will fill.
  CacheAssembler(const Model& model, std::string session_id, std::vector<int32_t> positions,
                 int next_position);
  // The same for a cache of the given shape that no local model has (KvCache::Create).
  CacheAssembler(int num_layers, int kv_heads, int head_dim, std::string session_id,
                 std::vector<int32_t> positions, int next_position);
  // Validates (header, CRC, sizes, positions) and writes the chunk into the cache.
  // A chunk whose positions disagree with the expected ones, or that covers cells
  // already written, is INVALID_ARGUMENT; a CRC mismatch is DATA_LOSS.
  absl::Status Add(const kvstream::v1::KvChunk& chunk);
  // The two halves of Add, for a receiver that checks a chunk as it arrives and writes
  // it later on another thread: Validate (header, CRC, sizes, positions against the
  // session; touches nothing, safe beside AddValidated) and AddValidated.
  absl::StatusOr<codec::ChunkMeta> Validate(const kvstream::v1::KvChunk& chunk) const;
  absl::Status AddValidated(const kvstream::v1::KvChunk& chunk, const codec::ChunkMeta& meta);
  // The same for a chunk whose payload is held apart from it (its `payload` field is not
  // read), e.g. in the network buffers it arrived in.
  absl::StatusOr<codec::ChunkMeta> Validate(const kvstream::v1::KvChunk& chunk,
                                            const codec::PayloadView& payload) const;
  absl::Status AddValidated(const codec::PayloadView& payload, const codec::ChunkMeta& meta);
  bool complete() const { return covered_ == total_; }
  uint64_t cells_missing() const { return total_ - covered_; }
  // The cache, once every (layer, slot) is covered.
  absl::StatusOr<std::unique_ptr<KvCache>> Finish();
  // The longest run of slots [0, n) that every layer has: what a progressive session cut
  // short can answer from (its slots come most important first).
  int CompletePrefix() const;
  // The cache cut to slots [0, n), each of which every layer must have, reordered by
  // position (in place: for n = every slot, the cache a sender without tiers would have
  // sent). Like Finish, hands the cache over.
  absl::StatusOr<std::unique_ptr<KvCache>> FinishPrefix(int n);

 private:
  void Init(int num_layers, int kv_heads, int head_dim, std::string session_id, int next_position);
  // The chunk's cells are inside the session, not yet written, at the expected positions.
  absl::Status CheckCells(uint64_t seq, const codec::ChunkMeta& meta) const;
  // The chunk's cells into the cache.
  absl::Status WriteChunk(const codec::PayloadView& payload, const codec::ChunkMeta& meta);
  // A lossless payload in the cache's dtype (tensors of `tensor_bytes`), copied in.
  absl::Status WriteRaw(const codec::PayloadView& payload, const codec::ChunkMeta& meta,
                        uint64_t tensor_bytes);

  codec::ChunkLimits limits_;
  std::vector<int32_t> positions_;
  std::unique_ptr<KvCache> cache_;
  std::vector<std::vector<bool>> written_;  // [layer][slot]
  uint64_t covered_ = 0;
  uint64_t total_ = 0;
  std::vector<float> scratch_;
  std::string raw_k_, raw_v_;  // a lossless tensor that straddles two payload ranges
};

}  // namespace kvstream::model
