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

#include "common/codec/chunk.h"
#include "common/codec/crc32c.h"

namespace {
// Malformed strings are expected input here; keep protobuf's parse warnings off stderr.
const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return true;
}();
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
  }
  return 0;
}
