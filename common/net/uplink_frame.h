// An Uplink as the cloud reads it off the stream. A KvChunk's payload stays in the gRPC
// slices it arrived in instead of being copied into the message: the CRC reads it there,
// and lossless rows are copied from there into a CPU cache (int tensors and lossless ones
// bound for another device are read in place unless they straddle two slices; a zstd
// frame is joined before it is decompressed). Parsing the message used to copy every
// payload byte once more, about 2 ms of CPU for a 19 MB cache on this 2-core machine.
//
// Any Uplink but a message that is one KvChunk with one payload field (what a sender
// writes) is parsed by protobuf as before, its payload in the message.
#pragma once

#include <grpcpp/impl/serialization_traits.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "common/codec/payload.h"
#include "kvstream/v1/service.pb.h"

namespace kvstream::net {

// CloudService.Transfer's index among the service's methods (as service.proto declares
// them), for a server that installs its own handler reading UplinkFrames.
int TransferMethodIndex();

class UplinkFrame {
 public:
  UplinkFrame() = default;
  // Moves keep the payload's views valid (the slices stay where they are) and leave the
  // source empty; copies would not keep them valid.
  UplinkFrame(UplinkFrame&& other) noexcept { *this = std::move(other); }
  UplinkFrame& operator=(UplinkFrame&& other) noexcept;
  UplinkFrame(const UplinkFrame&) = delete;
  UplinkFrame& operator=(const UplinkFrame&) = delete;

  // The message; when the payload is held apart, message.chunk().payload() is empty.
  kvstream::v1::Uplink message;

  // The chunk's payload: the held slices, or the message's own bytes.
  codec::PayloadView payload() const;
  // Whether payload() is held apart from the message.
  bool held() const { return held_; }
  // The serialized KvChunk's size, payload included.
  uint64_t chunk_bytes() const;

  // Reads `buffer` (and clears it, as gRPC's protobuf reader does). INTERNAL when it is
  // not an Uplink.
  grpc::Status Parse(grpc::ByteBuffer* buffer);
  // Whether Parse holds payloads apart (the default) or leaves every message to protobuf,
  // for the whole process.
  static void SetHoldPayloads(bool hold);
  // For tests: `message` as the cloud would read it from `serialized`, split into slices
  // at `cuts` (offsets, increasing).
  grpc::Status ParseSlices(const std::string& serialized, const std::vector<size_t>& cuts);

 private:
  void Clear();
  // The common case: one KvChunk field whose payload appears once. False: not that shape
  // (or malformed), for protobuf to parse.
  bool ParseChunk(const codec::PayloadView& bytes);

  std::vector<grpc::Slice> slices_;  // what the held payload's views point into
  codec::PayloadView held_payload_;
  bool held_ = false;
  uint64_t chunk_bytes_ = 0;
};

}  // namespace kvstream::net

namespace grpc {
// Lets a server read a stream's messages as UplinkFrames.
template <>
class SerializationTraits<kvstream::net::UplinkFrame> {
 public:
  static Status Deserialize(ByteBuffer* buffer, kvstream::net::UplinkFrame* frame) {
    return frame->Parse(buffer);
  }
};
}  // namespace grpc
