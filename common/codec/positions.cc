#include "common/codec/positions.h"

#include "absl/strings/str_cat.h"

namespace kvstream::codec {
namespace {

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

enum class Varint { kOk, kBad, kNotShortest };

Varint GetVarint(absl::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 35 && !in->empty(); shift += 7) {
    const auto byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      // A last byte of 0 after others adds nothing: the value has a shorter encoding.
      // Refused so that positions have one encoding, the one EncodePositions writes.
      if (byte == 0 && shift > 0) return Varint::kNotShortest;
      *v = result;
      return Varint::kOk;
    }
  }
  return Varint::kBad;  // truncated, or longer than 5 bytes (a 32-bit value never needs more)
}

}  // namespace

std::string EncodePositions(const std::vector<int32_t>& positions) {
  std::string out;
  out.reserve(positions.size() + 4);
  int64_t prev = -1;
  for (int32_t p : positions) {
    PutVarint(prev < 0 ? static_cast<uint64_t>(p) : static_cast<uint64_t>(p - prev), &out);
    prev = p;
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> DecodePositions(absl::string_view bytes, uint32_t count,
                                                     int64_t limit) {
  std::vector<int32_t> out;
  if (count > bytes.size()) {  // every position takes at least one byte
    return absl::InvalidArgumentError(absl::StrCat(
        "positions: ", count, " positions need at least ", count, " bytes, found ", bytes.size()));
  }
  out.reserve(count);
  int64_t prev = -1;
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t v = 0;
    switch (GetVarint(&bytes, &v)) {
      case Varint::kOk:
        break;
      case Varint::kBad:
        return absl::InvalidArgumentError(
            absl::StrCat("positions: varint ", i, " of ", count, " is truncated or overlong"));
      case Varint::kNotShortest:
        return absl::InvalidArgumentError(absl::StrCat(
            "positions: varint ", i, " of ", count, " is not in its shortest form (ends in 0x00)"));
    }
    if (i > 0 && v == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("positions: gap ", i, " is 0; positions must strictly increase"));
    }
    const int64_t pos = prev < 0 ? static_cast<int64_t>(v) : prev + static_cast<int64_t>(v);
    if (pos >= limit) {
      return absl::InvalidArgumentError(
          absl::StrCat("positions: position ", i, " is ", pos, ", expected < ", limit));
    }
    out.push_back(static_cast<int32_t>(pos));
    prev = pos;
  }
  if (!bytes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("positions: ", bytes.size(), " trailing bytes after ", count, " positions"));
  }
  return out;
}

}  // namespace kvstream::codec
