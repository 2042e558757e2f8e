// An Uplink as the edge writes it. A KvChunk's payload is held apart from the message and
// shared: the edge keeps a chunk for a retry and gRPC sends it from the same bytes, so
// neither keeping nor sending copies it. The message goes out as three slices, the
// fields before the payload (with the payload's tag and length), the payload itself, and
// the fields after it: byte for byte what protobuf would write.
//
// Writing every payload into one buffer (what protobuf's serializer does) is kept as a
// switch (`zero_copy` false), for comparison.
#pragma once

#include <grpcpp/impl/serialization_traits.h>
#include <grpcpp/support/byte_buffer.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kvstream/v1/service.pb.h"

namespace kvstream::net {

// CloudService.Transfer's path ("/kvstream.v1.CloudService/Transfer"), for a client that
// opens the stream itself to write OutgoingUplinks.
const char* TransferMethodPath();

// A KvChunk with its payload held apart: `header` is the chunk with an empty payload.
// Copies share the payload.
struct SharedChunk {
  kvstream::v1::KvChunk header;
  std::shared_ptr<const std::string> payload;

  // Moves the payload out of `chunk` (no bytes are copied).
  static SharedChunk From(kvstream::v1::KvChunk chunk);
  // The chunk's size serialized, payload included (KvChunk::ByteSizeLong of the whole).
  uint64_t ByteSize() const;
  // The whole chunk as one message (copies the payload; for tests and tools).
  kvstream::v1::KvChunk Whole() const;
};

// SharedChunk::From of each.
std::vector<SharedChunk> ShareAll(std::vector<kvstream::v1::KvChunk> chunks);

class OutgoingUplink {
 public:
  // A message serialized by protobuf (SessionOpen, Commit).
  explicit OutgoingUplink(kvstream::v1::Uplink message);
  // A chunk, its payload handed to gRPC where it is (`zero_copy`) or copied into one
  // buffer with the rest of the message.
  OutgoingUplink(SharedChunk chunk, bool zero_copy);

  // The serialized size.
  uint64_t ByteSize() const;
  // Fills `buffer` (gRPC's serialization hook).
  grpc::Status Serialize(grpc::ByteBuffer* buffer) const;
  // The serialized bytes in one string (for tests).
  std::string SerializeAsString() const;

 private:
  kvstream::v1::Uplink message_;  // when not a chunk
  std::optional<SharedChunk> chunk_;
  bool zero_copy_ = true;
};

}  // namespace kvstream::net

namespace grpc {
// Lets a client write a stream's messages as OutgoingUplinks.
template <>
class SerializationTraits<kvstream::net::OutgoingUplink> {
 public:
  static Status Serialize(const kvstream::net::OutgoingUplink& up, ByteBuffer* buffer,
                          bool* own_buffer) {
    *own_buffer = true;
    return up.Serialize(buffer);
  }
};
}  // namespace grpc
