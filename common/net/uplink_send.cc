#include "common/net/uplink_send.h"

#include <google/protobuf/io/coded_stream.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace kvstream::net {
namespace {

using google::protobuf::io::CodedOutputStream;
using kvstream::v1::KvChunk;

constexpr uint32_t kChunkTag = kvstream::v1::Uplink::kChunkFieldNumber << 3 | 2;
constexpr uint32_t kPayloadTag = KvChunk::kPayloadFieldNumber << 3 | 2;

void AppendVarint(uint64_t v, std::string& out) {
  uint8_t bytes[10];
  const uint8_t* end = CodedOutputStream::WriteVarint64ToArray(v, bytes);
  out.append(reinterpret_cast<const char*>(bytes), end - bytes);
}

// The header's fields numbered below the payload's and those above it: protobuf writes
// known fields in the order of their numbers, then any unknown ones, so the payload goes
// between the two.
std::pair<KvChunk, KvChunk> SplitAtPayload(const KvChunk& header) {
  std::pair<KvChunk, KvChunk> parts{header, header};
  const google::protobuf::Reflection* r = header.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  r->ListFields(header, &fields);
  for (const google::protobuf::FieldDescriptor* f : fields) {
    r->ClearField(f->number() < KvChunk::kPayloadFieldNumber ? &parts.second : &parts.first, f);
  }
  r->MutableUnknownFields(&parts.first)->Clear();
  return parts;
}

// The Uplink's bytes before the payload and after it.
struct Framing {
  std::string before, after;
};

Framing FrameChunk(const SharedChunk& c) {
  const auto [low, high] = SplitAtPayload(c.header);
  const uint64_t n = c.payload->size();
  Framing f;
  AppendVarint(kChunkTag, f.before);
  AppendVarint(c.ByteSize(), f.before);
  low.AppendToString(&f.before);
  AppendVarint(kPayloadTag, f.before);
  AppendVarint(n, f.before);
  high.AppendToString(&f.after);
  return f;
}

// A slice over the shared payload, which it keeps alive until gRPC lets go of it.
grpc::Slice PayloadSlice(const std::shared_ptr<const std::string>& payload) {
  auto* owner = new std::shared_ptr<const std::string>(payload);
  return grpc::Slice(
      const_cast<char*>(payload->data()), payload->size(),
      [](void* p) { delete static_cast<std::shared_ptr<const std::string>*>(p); }, owner);
}

}  // namespace

SharedChunk SharedChunk::From(KvChunk chunk) {
  auto payload = std::make_shared<std::string>();
  payload->swap(*chunk.mutable_payload());
  chunk.clear_payload();
  return SharedChunk{std::move(chunk), std::move(payload)};
}

std::vector<SharedChunk> ShareAll(std::vector<KvChunk> chunks) {
  std::vector<SharedChunk> shared;
  shared.reserve(chunks.size());
  for (KvChunk& c : chunks) shared.push_back(SharedChunk::From(std::move(c)));
  return shared;
}

uint64_t SharedChunk::ByteSize() const {
  const uint64_t n = payload == nullptr ? 0 : payload->size();
  if (n == 0) return header.ByteSizeLong();  // proto3 writes no empty payload
  return header.ByteSizeLong() + CodedOutputStream::VarintSize32(kPayloadTag) +
         CodedOutputStream::VarintSize64(n) + n;
}

KvChunk SharedChunk::Whole() const {
  KvChunk c = header;
  if (payload != nullptr) c.set_payload(*payload);
  return c;
}

OutgoingUplink::OutgoingUplink(kvstream::v1::Uplink message) : message_(std::move(message)) {}

OutgoingUplink::OutgoingUplink(SharedChunk chunk, bool zero_copy) : zero_copy_(zero_copy) {
  if (chunk.payload == nullptr || chunk.payload->empty()) {
    *message_.mutable_chunk() = std::move(chunk.header);  // nothing to hold apart
  } else {
    chunk_ = std::move(chunk);
  }
}

uint64_t OutgoingUplink::ByteSize() const {
  if (!chunk_) return message_.ByteSizeLong();
  const uint64_t n = chunk_->ByteSize();
  return CodedOutputStream::VarintSize32(kChunkTag) + CodedOutputStream::VarintSize64(n) + n;
}

grpc::Status OutgoingUplink::Serialize(grpc::ByteBuffer* buffer) const {
  if (!chunk_) {
    bool own = false;
    return grpc::GenericSerialize<grpc::ProtoBufferWriter, kvstream::v1::Uplink>(message_, buffer,
                                                                                 &own);
  }
  const Framing f = FrameChunk(*chunk_);
  const std::string& payload = *chunk_->payload;
  if (!zero_copy_) {  // one buffer, as protobuf's serializer fills it
    grpc::Slice whole(f.before.size() + payload.size() + f.after.size());
    char* out = const_cast<char*>(reinterpret_cast<const char*>(whole.begin()));
    out = std::copy(f.before.begin(), f.before.end(), out);
    out = std::copy(payload.begin(), payload.end(), out);
    std::copy(f.after.begin(), f.after.end(), out);
    grpc::ByteBuffer one(&whole, 1);
    buffer->Swap(&one);
    return grpc::Status::OK;
  }
  const grpc::Slice slices[3] = {grpc::Slice(f.before), PayloadSlice(chunk_->payload),
                                 grpc::Slice(f.after)};
  grpc::ByteBuffer three(slices, f.after.empty() ? 2 : 3);
  buffer->Swap(&three);
  return grpc::Status::OK;
}

std::string OutgoingUplink::SerializeAsString() const {
  grpc::ByteBuffer buffer;
  std::vector<grpc::Slice> slices;
  if (!Serialize(&buffer).ok() || !buffer.Dump(&slices).ok()) return "";
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

}  // namespace kvstream::net
