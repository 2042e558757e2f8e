#include "common/codec/bitpack.h"

#include <cstring>

namespace kvstream::codec {
namespace {

// Eight B-bit codes fill exactly B bytes, least significant bit first. The width is a
// template parameter so that the shifts are constants and the loops unroll.
template <int B>
size_t PutEights(const uint8_t* codes, size_t n, uint8_t*& out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = 0;
    for (int j = 0; j < 8; ++j) v |= static_cast<uint64_t>(codes[i + j]) << (j * B);
    for (int k = 0; k < B; ++k) out[k] = static_cast<uint8_t>(v >> (8 * k));
    out += B;
  }
  return i;
}

template <int B>
size_t GetEights(const uint8_t*& in, const uint8_t* end, uint8_t* codes, size_t n) {
  constexpr uint64_t kMask = (uint64_t{1} << B) - 1;
  size_t i = 0;
  // One 8-byte load (little-endian, as the whole codec), B bytes of it used.
  for (; i + 8 <= n && in + 8 <= end; i += 8) {
    uint64_t v;
    std::memcpy(&v, in, 8);
    for (int j = 0; j < 8; ++j) codes[i + j] = static_cast<uint8_t>((v >> (j * B)) & kMask);
    in += B;
  }
  for (; i + 8 <= n && in + B <= end; i += 8) {  // the last bytes: B loads of one byte
    uint64_t v = 0;
    for (int k = 0; k < B; ++k) v |= static_cast<uint64_t>(in[k]) << (8 * k);
    for (int j = 0; j < 8; ++j) codes[i + j] = static_cast<uint8_t>((v >> (j * B)) & kMask);
    in += B;
  }
  return i;
}

}  // namespace

void BitWriter::Put(const uint8_t* codes, size_t n) {
  if (n == 0) return;
  size_t i = 0;
  // Byte-aligned fast paths: whole output bytes from 8/b codes at a time.
  if (n_acc_ == 0) {
    switch (bits_) {
      case 8:
        std::memcpy(out_, codes, n);
        out_ += n;
        return;
      case 4: {
        const size_t pairs = n / 2;
        uint8_t* __restrict o = out_;
        const uint8_t* __restrict c = codes;
        for (size_t j = 0; j < pairs; ++j)
          o[j] = static_cast<uint8_t>(c[2 * j] | (c[2 * j + 1] << 4));
        out_ += pairs;
        i = 2 * pairs;
        break;
      }
      case 2:
        for (; i + 4 <= n; i += 4) {
          *out_++ = static_cast<uint8_t>(codes[i] | (codes[i + 1] << 2) | (codes[i + 2] << 4) |
                                         (codes[i + 3] << 6));
        }
        break;
      case 1:
        for (; i + 8 <= n; i += 8) {
          uint8_t b = 0;
          for (int j = 0; j < 8; ++j) b |= static_cast<uint8_t>(codes[i + j] << j);
          *out_++ = b;
        }
        break;
      case 3:
        i = PutEights<3>(codes, n, out_);
        break;
      case 5:
        i = PutEights<5>(codes, n, out_);
        break;
      case 6:
        i = PutEights<6>(codes, n, out_);
        break;
      case 7:
        i = PutEights<7>(codes, n, out_);
        break;
      default:
        break;
    }
  }
  // General path: a 64-bit accumulator, flushed 32 bits at a time.
  for (; i < n; ++i) {
    acc_ |= static_cast<uint64_t>(codes[i]) << n_acc_;
    n_acc_ += bits_;
    if (n_acc_ >= 32) {
      const uint32_t word = static_cast<uint32_t>(acc_);
      out_[0] = static_cast<uint8_t>(word);
      out_[1] = static_cast<uint8_t>(word >> 8);
      out_[2] = static_cast<uint8_t>(word >> 16);
      out_[3] = static_cast<uint8_t>(word >> 24);
      out_ += 4;
      acc_ >>= 32;
      n_acc_ -= 32;
    }
  }
  // Leave whole bytes in the accumulator out, so that the fast paths can resume.
  while (n_acc_ >= 8) {
    *out_++ = static_cast<uint8_t>(acc_);
    acc_ >>= 8;
    n_acc_ -= 8;
  }
}

void BitWriter::Finish() {
  if (n_acc_ > 0) {
    *out_++ = static_cast<uint8_t>(acc_);
    acc_ = 0;
    n_acc_ = 0;
  }
}

void BitReader::Get(uint8_t* codes, size_t n) {
  if (n == 0) return;
  size_t i = 0;
  const uint8_t mask = static_cast<uint8_t>((1u << bits_) - 1);
  if (n_acc_ == 0) {
    switch (bits_) {
      case 8:
        std::memcpy(codes, in_, n);
        in_ += n;
        return;
      case 4: {
        const size_t pairs = n / 2;
        const uint8_t* __restrict in = in_;
        uint8_t* __restrict c = codes;
        for (size_t j = 0; j < pairs; ++j) {
          c[2 * j] = in[j] & 0xf;
          c[2 * j + 1] = in[j] >> 4;
        }
        in_ += pairs;
        i = 2 * pairs;
        break;
      }
      case 2:
        for (; i + 4 <= n; i += 4) {
          const uint8_t b = *in_++;
          codes[i] = b & 3;
          codes[i + 1] = (b >> 2) & 3;
          codes[i + 2] = (b >> 4) & 3;
          codes[i + 3] = b >> 6;
        }
        break;
      case 1:
        for (; i + 8 <= n; i += 8) {
          const uint8_t b = *in_++;
          for (int j = 0; j < 8; ++j) codes[i + j] = (b >> j) & 1;
        }
        break;
      case 3:
        i = GetEights<3>(in_, end_, codes, n);
        break;
      case 5:
        i = GetEights<5>(in_, end_, codes, n);
        break;
      case 6:
        i = GetEights<6>(in_, end_, codes, n);
        break;
      case 7:
        i = GetEights<7>(in_, end_, codes, n);
        break;
      default:
        break;
    }
  }
  for (; i < n; ++i) {
    if (n_acc_ < bits_) {
      // Refill a byte at a time: never touches memory past end_.
      while (n_acc_ <= 56 && in_ < end_) {
        acc_ |= static_cast<uint64_t>(*in_++) << n_acc_;
        n_acc_ += 8;
      }
    }
    codes[i] = static_cast<uint8_t>(acc_) & mask;
    acc_ >>= bits_;
    n_acc_ -= bits_;
  }
  // Give back whole unread bytes so a later fast path starts at the right byte. The
  // remaining partial byte's bits stay in the accumulator.
  while (n_acc_ >= 8) {
    --in_;
    n_acc_ -= 8;
    acc_ &= (n_acc_ == 0) ? 0 : ((uint64_t{1} << n_acc_) - 1);
  }
}

void PackBits(const uint8_t* codes, size_t n, int bits, uint8_t* out) {
  BitWriter w(out, bits);
  w.Put(codes, n);
  w.Finish();
}

void UnpackBits(const uint8_t* in, size_t n, int bits, uint8_t* codes) {
  BitReader r(in, in + PackedBytes(n, bits), bits);
  r.Get(codes, n);
}

}  // namespace kvstream::codec
