// A chunk's payload as one or more byte ranges, in order. A receiver can keep a payload in
// the network buffers it arrived in (gRPC hands a 1 MiB message over as 17-130 slices of
// 8-64 KiB) and write it into the cache from there, instead of first copying it into one
// string: the cache write is then the only copy the receiver makes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvstream::codec {

class PayloadView {
 public:
  PayloadView() = default;
  // One range.
  explicit PayloadView(absl::string_view whole);
  // Several ranges, in order (empty ones allowed).
  explicit PayloadView(absl::Span<const absl::string_view> parts);
  PayloadView(const PayloadView&) = default;
  PayloadView& operator=(const PayloadView&) = default;
  // Leaves the source empty.
  PayloadView(PayloadView&& other) noexcept { *this = std::move(other); }
  PayloadView& operator=(PayloadView&& other) noexcept;

  uint64_t size() const { return size_; }
  // Ranges the bytes are in (0 for an empty payload).
  size_t num_parts() const { return parts_.size(); }
  // CRC32C of the bytes (codec::Crc32c over the ranges in turn).
  uint32_t Crc32c() const;
  // Copies bytes [offset, offset + n) to `dst`; false (nothing copied) when they are not
  // all inside the payload.
  bool CopyOut(uint64_t offset, uint64_t n, void* dst) const;
  // Bytes [offset, offset + n): in place when they lie in one range, else copied into
  // `*scratch` (whose capacity is reused). nullptr when they are not all inside.
  const uint8_t* Get(uint64_t offset, uint64_t n, std::string* scratch) const;
  // The bytes as one string.
  std::string Flatten() const;
  // Bytes [offset, offset + n) as a view of the same storage; empty when they are not all
  // inside.
  PayloadView Sub(uint64_t offset, uint64_t n) const;

 private:
  // Index of the range holding byte `offset` (< size()).
  size_t PartAt(uint64_t offset) const;
  // Calls fn(piece) for the pieces of the ranges that make up bytes [offset, offset + n),
  // in order (the caller checked they are inside).
  template <typename Fn>
  void ForEachPiece(uint64_t offset, uint64_t n, Fn fn) const;

  std::vector<absl::string_view> parts_;  // non-empty ranges only
  std::vector<uint64_t> starts_;          // offset of each range's first byte
  uint64_t size_ = 0;
};

}  // namespace kvstream::codec
