// libFuzzer target for the chunk decoder. Input: one control byte, then a serialized
// KvChunk. When bit 0 of the control byte is set the CRC is recomputed before decoding,
// so the fuzzer also reaches the size checks, zstd and the tensor decoders behind it.
//
// Build: cmake -DKVSTREAM_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ ...; run:
//   build-fuzz/bin/kvstream-chunk-fuzz common/codec/chunk_fuzz_corpus
// The committed corpus also runs as a regression test (tests/common/codec).
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/codec/chunk.h"
#include "common/codec/crc32c.h"
#include "common/codec/half.h"

namespace {
// Malformed strings are expected input here; keep protobuf's parse warnings off stderr.
const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return true;
}();

// Invariant: an int chunk decoded straight into bf16 rows (as a bf16 cache takes it, one
// spare slot per head) holds what its float32 decoding rounds to, bit for bit.
void CheckDirectBf16(const kvstream::v1::KvChunk& chunk, const kvstream::codec::DecodedChunk& d) {
  auto payload = kvstream::codec::ChunkPayload::Open(chunk, d.meta);
  if (!payload.ok()) std::abort();
  if (!payload->DecodesToBf16Directly()) return;
  const int64_t T = d.meta.num_tokens(), D = d.meta.head_dim, stride = T + 1;
  std::vector<uint8_t> k(2 * d.meta.kv_heads * stride * D), v(k.size());
  for (int i = 0; i < d.meta.num_layers(); ++i) {
    if (!payload->DecodeLayerToBf16(i, k.data(), v.data(), stride).ok()) std::abort();
    for (size_t e = 0; e < d.tensor_numel(); ++e) {
      const size_t h = e / (T * D), at = 2 * (h * stride * D + e % (T * D));
      for (const auto& [rows, x] : {std::make_pair(&k, d.k(i)[e]), std::make_pair(&v, d.v(i)[e])}) {
        uint16_t got;
        std::memcpy(&got, rows->data() + at, 2);
        if (got != kvstream::codec::FloatToBf16(x)) std::abort();
      }
    }
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  kvstream::v1::KvChunk chunk;
  if (!chunk.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  if (data[0] & 1) {
    chunk.set_crc32c(kvstream::codec::Crc32c(chunk.payload().data(), chunk.payload().size()));
  }
  kvstream::codec::ChunkLimits limits;
  limits.max_position = 1 << 16;
  limits.max_decoded_bytes = 16 << 20;
  auto decoded = kvstream::codec::DecodeChunk(chunk, limits);
  if (decoded.ok()) {
    // Invariant: a chunk that decodes holds exactly the tensors its header describes.
    const auto& m = decoded->meta;
    const size_t expected = static_cast<size_t>(m.num_layers()) * 2 * decoded->tensor_numel();
    if (decoded->kv.size() != expected || m.num_tokens() != static_cast<int>(chunk.num_tokens())) {
      std::abort();
    }
    CheckDirectBf16(chunk, *decoded);
  }
  return 0;
}
