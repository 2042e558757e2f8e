// Dense bit packing of b-bit codes (1 <= b <= 8): code i occupies bits [i*b, (i+1)*b) of a
// little-endian bit stream (LSB of byte 0 first). n codes take exactly ceil(n*b/8) bytes;
// unused high bits of the last byte are zero.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvstream::codec {

inline size_t PackedBytes(size_t n, int bits) { return (n * static_cast<size_t>(bits) + 7) / 8; }

// Appends codes to a preallocated byte range. Codes must be < 2^bits.
class BitWriter {
 public:
  BitWriter(uint8_t* out, int bits) : out_(out), bits_(bits) {}
  void Put(const uint8_t* codes, size_t n);
  // Writes the pending partial byte (high bits zero).
  void Finish();

 private:
  uint8_t* out_;
  int bits_;
  uint64_t acc_ = 0;  // pending bits, LSB first
  int n_acc_ = 0;
};

// Reads codes from a byte range that holds at least PackedBytes(total codes, bits) bytes;
// never reads past `end`.
class BitReader {
 public:
  BitReader(const uint8_t* in, const uint8_t* end, int bits) : in_(in), end_(end), bits_(bits) {}
  void Get(uint8_t* codes, size_t n);

 private:
  const uint8_t* in_;
  const uint8_t* end_;
  int bits_;
  uint64_t acc_ = 0;
  int n_acc_ = 0;
};

// Whole-buffer helpers.
void PackBits(const uint8_t* codes, size_t n, int bits, uint8_t* out);
void UnpackBits(const uint8_t* in, size_t n, int bits, uint8_t* codes);

}  // namespace kvstream::codec
