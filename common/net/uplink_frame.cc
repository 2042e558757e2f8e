#include "common/net/uplink_frame.h"

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <atomic>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kvstream::net {
namespace {

constexpr uint64_t kChunkField = kvstream::v1::Uplink::kChunkFieldNumber;
constexpr uint64_t kPayloadField = kvstream::v1::KvChunk::kPayloadFieldNumber;
// Protobuf wire types.
constexpr uint64_t kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

std::atomic<bool> hold_payloads{true};

// A varint of at most `max_bytes` bytes and value `max_value` at `at` (advanced past it),
// within [at, end); false otherwise.
bool ReadVarint(const codec::PayloadView& b, uint64_t& at, uint64_t end, int max_bytes,
                uint64_t max_value, uint64_t* out) {
  uint64_t v = 0;
  for (int i = 0; i < max_bytes && at < end; ++i) {
    uint8_t byte = 0;
    b.CopyOut(at++, 1, &byte);
    v |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) {
      *out = v;
      return v <= max_value;
    }
  }
  return false;
}

// Tags and lengths as protobuf reads them without doubt: five bytes at most, a tag within
// 32 bits, a length well inside int. Anything else (protobuf truncates long tags and
// refuses long lengths) is left to protobuf.
bool ReadTag(const codec::PayloadView& b, uint64_t& at, uint64_t end, uint64_t* out) {
  return ReadVarint(b, at, end, 5, UINT32_MAX, out);
}
bool ReadLength(const codec::PayloadView& b, uint64_t& at, uint64_t end, uint64_t* out) {
  return ReadVarint(b, at, end, 5, INT32_MAX - 64, out);
}

// Past one field's value of wire type `type` (a length-delimited one's length read into
// *len); false when malformed or past `end`.
bool SkipValue(const codec::PayloadView& b, uint64_t type, uint64_t& at, uint64_t end,
               uint64_t* len) {
  uint64_t n = 0;
  switch (type) {
    case kVarint:  // a value protobuf reads itself
      return ReadVarint(b, at, end, 10, UINT64_MAX, &n);
    case kFixed64:
      n = 8;
      break;
    case kFixed32:
      n = 4;
      break;
    case kLengthDelimited:
      if (!ReadLength(b, at, end, &n)) return false;
      *len = n;
      break;
    default:  // groups: not in these messages; protobuf decides
      return false;
  }
  if (n > end - at) return false;
  at += n;
  return true;
}

}  // namespace

const google::protobuf::MethodDescriptor& TransferMethod() {
  return *kvstream::v1::Uplink::descriptor()
              ->file()
              ->FindServiceByName("CloudService")
              ->FindMethodByName("Transfer");
}

int TransferMethodIndex() { return TransferMethod().index(); }

const char* TransferMethodPath() {
  static const std::string* path = new std::string(
      absl::StrCat("/", TransferMethod().service()->full_name(), "/", TransferMethod().name()));
  return path->c_str();
}

void UplinkFrame::SetHoldPayloads(bool hold) { hold_payloads.store(hold); }

UplinkFrame& UplinkFrame::operator=(UplinkFrame&& other) noexcept {
  if (this != &other) {
    message = std::move(other.message);
    slices_ = std::move(other.slices_);
    held_payload_ = std::move(other.held_payload_);
    held_ = other.held_;
    chunk_bytes_ = other.chunk_bytes_;
    other.Clear();
  }
  return *this;
}

codec::PayloadView UplinkFrame::payload() const {
  return held_ ? held_payload_ : codec::PayloadView(message.chunk().payload());
}

uint64_t UplinkFrame::chunk_bytes() const {
  return held_ ? chunk_bytes_ : message.chunk().ByteSizeLong();
}

void UplinkFrame::Clear() {
  message.Clear();
  slices_.clear();
  held_payload_ = codec::PayloadView();
  held_ = false;
  chunk_bytes_ = 0;
}

grpc::Status UplinkFrame::Parse(grpc::ByteBuffer* buffer) {
  Clear();
  std::vector<grpc::Slice> slices;
  if (hold_payloads.load(std::memory_order_relaxed) && buffer != nullptr &&
      buffer->Dump(&slices).ok()) {  // references, not copies
    std::vector<absl::string_view> parts;
    parts.reserve(slices.size());
    for (const grpc::Slice& s : slices) {
      parts.emplace_back(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    slices_ = std::move(slices);  // the same elements: the views stay valid
    if (ParseChunk(codec::PayloadView(parts))) {
      buffer->Clear();
      return grpc::Status::OK;
    }
    Clear();
  }
  return grpc::GenericDeserialize<grpc::ProtoBufferReader, kvstream::v1::Uplink>(buffer, &message);
}

bool UplinkFrame::ParseChunk(const codec::PayloadView& bytes) {
  uint64_t at = 0, tag = 0, len = 0;
  const uint64_t end = bytes.size();
  // The Uplink: one KvChunk field, to the end of the message.
  if (!ReadTag(bytes, at, end, &tag) || tag != (kChunkField << 3 | kLengthDelimited) ||
      !ReadLength(bytes, at, end, &len) || len != end - at) {
    return false;
  }
  chunk_bytes_ = len;
  // The KvChunk's fields but the payload, byte for byte, for protobuf to parse.
  std::string header;
  uint64_t payload_at = 0, payload_len = 0;
  bool have_payload = false;
  while (at < end) {
    const uint64_t field_at = at;
    if (!ReadTag(bytes, at, end, &tag) || (tag >> 3) == 0) return false;
    if (!SkipValue(bytes, tag & 7, at, end, &len)) return false;
    if (tag == (kPayloadField << 3 | kLengthDelimited)) {
      if (have_payload) return false;  // protobuf keeps the last: let it
      have_payload = true;
      payload_at = at - len;
      payload_len = len;
      continue;
    }
    const size_t old = header.size();
    header.resize(old + (at - field_at));
    bytes.CopyOut(field_at, at - field_at, header.data() + old);
  }
  // (A payload protobuf found in the header would mean the walker misread a tag.)
  if (!have_payload || !message.mutable_chunk()->ParseFromString(header) ||
      !message.chunk().payload().empty()) {
    return false;
  }
  held_payload_ = bytes.Sub(payload_at, payload_len);
  held_ = true;
  return true;
}

grpc::Status UplinkFrame::ParseSlices(const std::string& serialized,
                                      const std::vector<size_t>& cuts) {
  std::vector<grpc::Slice> slices;
  size_t from = 0;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    const size_t to = i < cuts.size() ? cuts[i] : serialized.size();
    slices.emplace_back(serialized.data() + from, to - from);  // copies
    from = to;
  }
  grpc::ByteBuffer buffer(slices.data(), slices.size());
  return Parse(&buffer);
}

}  // namespace kvstream::net
