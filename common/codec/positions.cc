#include "common/codec/positions.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"

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

namespace {

// Decodes `count` positions (a run: strictly increasing, the first written whole) from
// the front of `*bytes` onto `out`; `run` names the run in errors ("" for a single list).
absl::Status DecodeRun(absl::string_view* bytes, uint32_t count, int64_t limit,
                       const std::string& run, std::vector<int32_t>* out) {
  int64_t prev = -1;
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t v = 0;
    switch (GetVarint(bytes, &v)) {
      case Varint::kOk:
        break;
      case Varint::kBad:
        return absl::InvalidArgumentError(absl::StrCat("positions: ", run, "varint ", i, " of ",
                                                       count, " is truncated or overlong"));
      case Varint::kNotShortest:
        return absl::InvalidArgumentError(
            absl::StrCat("positions: ", run, "varint ", i, " of ", count,
                         " is not in its shortest form (ends in 0x00)"));
    }
    if (i > 0 && v == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("positions: ", run, "gap ", i, " is 0; positions must strictly increase"));
    }
    const int64_t pos = prev < 0 ? static_cast<int64_t>(v) : prev + static_cast<int64_t>(v);
    if (pos >= limit) {
      return absl::InvalidArgumentError(
          absl::StrCat("positions: ", run, "position ", i, " is ", pos, ", expected < ", limit));
    }
    out->push_back(static_cast<int32_t>(pos));
    prev = pos;
  }
  return absl::OkStatus();
}

absl::Status CheckCount(absl::string_view bytes, uint64_t count) {
  if (count <= bytes.size()) return absl::OkStatus();  // every position takes a byte or more
  return absl::InvalidArgumentError(absl::StrCat("positions: ", count, " positions need at least ",
                                                 count, " bytes, found ", bytes.size()));
}

absl::Status CheckNoTrailing(absl::string_view bytes, uint64_t count) {
  if (bytes.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("positions: ", bytes.size(), " trailing bytes after ", count, " positions"));
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> DecodePositions(absl::string_view bytes, uint32_t count,
                                                     int64_t limit) {
  RETURN_IF_ERROR(CheckCount(bytes, count));
  std::vector<int32_t> out;
  out.reserve(count);
  RETURN_IF_ERROR(DecodeRun(&bytes, count, limit, "", &out));
  RETURN_IF_ERROR(CheckNoTrailing(bytes, count));
  return out;
}

std::string EncodePositionRuns(const std::vector<int32_t>& positions,
                               const std::vector<uint32_t>& run_lengths) {
  std::string out;
  size_t at = 0;
  for (uint32_t n : run_lengths) {
    n = static_cast<uint32_t>(std::min<size_t>(n, positions.size() - at));  // past the end: cut
    const std::vector<int32_t> run(positions.begin() + at, positions.begin() + at + n);
    out += EncodePositions(run);
    at += n;
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> DecodePositionRuns(absl::string_view bytes,
                                                        const std::vector<uint32_t>& run_lengths,
                                                        int64_t limit) {
  uint64_t total = 0;
  for (uint32_t n : run_lengths) total += n;
  RETURN_IF_ERROR(CheckCount(bytes, total));
  std::vector<int32_t> out;
  out.reserve(total);
  for (size_t r = 0; r < run_lengths.size(); ++r) {
    RETURN_IF_ERROR(DecodeRun(&bytes, run_lengths[r], limit, absl::StrCat("run ", r, ": "), &out));
  }
  RETURN_IF_ERROR(CheckNoTrailing(bytes, total));
  // Runs may interleave, but no position may appear twice.
  std::vector<int32_t> sorted = out;
  std::sort(sorted.begin(), sorted.end());
  const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup != sorted.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("positions: position ", *dup, " appears in two runs"));
  }
  return out;
}

}  // namespace kvstream::codec
