#include "common/codec/crc32c.h"

#include <algorithm>
#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace kvstream::codec {
namespace {

// Slicing-by-8 tables: kTables[k][b] is the CRC of byte b followed by k zero bytes.
struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
    }
  }
};

const Tables& GetTables() {
  static const Tables tables;
  return tables;
}

#if defined(__x86_64__)
// Bytes per lane: the instruction's result takes three cycles and it can start one every
// cycle, so a single chain runs at a third of its speed. Above three lanes' worth, the
// data goes in stripes of three lanes computed side by side and joined. (Lanes of 512
// bytes ran at two thirds of one chain's speed on data not in cache.)
constexpr size_t kLane = 8192;

// Appending n zero bytes to a raw (not inverted) CRC register is linear in the register,
// so four lookups, one per byte of it, do it.
struct ZeroShift {
  std::array<std::array<uint32_t, 256>, 4> t{};
  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
  }
};

template <typename Shift>
ZeroShift TableOf(Shift shift) {
  std::array<uint32_t, 32> basis{};  // where each bit of the register goes
  for (int i = 0; i < 32; ++i) basis[i] = shift(1u << i);
  ZeroShift z;
  for (int k = 0; k < 4; ++k) {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t v = 0;
      for (int bit = 0; bit < 8; ++bit) v ^= (b >> bit & 1u) ? basis[8 * k + bit] : 0u;
      z.t[k][b] = v;
    }
  }
  return z;
}

__attribute__((target("sse4.2"))) uint32_t AppendZeroLane(uint32_t c) {
  uint64_t r = c;
  for (size_t i = 0; i < kLane; i += 8) r = _mm_crc32_u64(r, 0);
  return static_cast<uint32_t>(r);
}

// Shifts by one and by two lanes of zeros.
struct LaneShifts {
  ZeroShift one, two;
  LaneShifts()
      : one(TableOf(AppendZeroLane)), two(TableOf([this](uint32_t c) { return one(one(c)); })) {}
};

const LaneShifts& GetLaneShifts() {
  static const LaneShifts shifts;
  return shifts;
}

uint64_t Load64(const uint8_t* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

// The SSE4.2 crc32 instruction computes this same polynomial, 8 bytes at a time; three
// lanes at once (lane a continues the running register, lanes b and c start from zero:
// register(a b c) = shift2(register(a)) ^ shift1(register(b)) ^ register(c)), then the
// rest in one chain.
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(const uint8_t* p, size_t n, uint32_t crc) {
  uint64_t reg = ~crc;
  if (n >= 3 * kLane) {
    const LaneShifts& shift = GetLaneShifts();
    for (; n >= 3 * kLane; p += 3 * kLane, n -= 3 * kLane) {
      uint64_t a = reg, b = 0, c = 0;
      for (size_t i = 0; i < kLane; i += 8) {
        a = _mm_crc32_u64(a, Load64(p + i));
        b = _mm_crc32_u64(b, Load64(p + kLane + i));
        c = _mm_crc32_u64(c, Load64(p + 2 * kLane + i));
      }
      reg = shift.two(static_cast<uint32_t>(a)) ^ shift.one(static_cast<uint32_t>(b)) ^
            static_cast<uint32_t>(c);
    }
  }
  for (; n >= 8; p += 8, n -= 8) reg = _mm_crc32_u64(reg, Load64(p));
  auto c32 = static_cast<uint32_t>(reg);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}

// A position in a sequence of byte ranges.
class Cursor {
 public:
  Cursor(const absl::string_view* part, const absl::string_view* end) : part_(part), end_(end) {
    Skip();
  }
  size_t avail() const { return part_ == end_ ? 0 : part_->size() - off_; }
  const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(part_->data()) + off_; }
  // Moves n bytes on (n <= the bytes left in all the ranges).
  void Advance(size_t n) {
    while (n > 0) {
      const size_t take = n < avail() ? n : avail();
      off_ += take;
      n -= take;
      Skip();
    }
  }

 private:
  void Skip() {
    while (part_ != end_ && off_ == part_->size()) {
      ++part_;
      off_ = 0;
    }
  }
  const absl::string_view* part_;
  const absl::string_view* end_;
  size_t off_ = 0;
};

// One lane of a stripe that may cross from range to range: its register, the bytes it has
// left, and where they are.
struct Lane {
  uint64_t reg;
  size_t left;
  Cursor at;
  // Bytes one at a time while fewer than a word are left in the lane or in its range.
  __attribute__((target("sse4.2"))) void Fixup() {
    while (left > 0 && (left < 8 || at.avail() < 8)) {
      reg = _mm_crc32_u8(static_cast<uint32_t>(reg), *at.data());
      at.Advance(1);
      --left;
    }
  }
  // The rest of the lane in one chain.
  __attribute__((target("sse4.2"))) void Finish() {
    for (;;) {
      Fixup();  // leaves a word or more in the lane and its range, or nothing in the lane
      const size_t n = std::min(left, at.avail()) & ~size_t{7};
      if (n == 0) return;
      const uint8_t* p = at.data();
      for (size_t i = 0; i < n; i += 8) reg = _mm_crc32_u64(reg, Load64(p + i));
      at.Advance(n);
      left -= n;
    }
  }
};

// Stripes of three lanes over ranges, each lane running on across range boundaries, so
// that a payload held in many small ranges is checked at the speed of one buffer.
// Returns the register; `at` and `n` move past the stripes.
__attribute__((target("sse4.2"))) uint64_t StripesAcross(Cursor& at, size_t& n, uint64_t reg) {
  if (n < 3 * kLane) return reg;
  const LaneShifts& shift = GetLaneShifts();
  for (; n >= 3 * kLane; n -= 3 * kLane) {
    Lane a{reg, kLane, at}, b{0, kLane, at}, c{0, kLane, at};
    b.at.Advance(kLane);
    c.at.Advance(2 * kLane);
    for (;;) {
      a.Fixup();
      b.Fixup();
      c.Fixup();
      if (a.left == 0 || b.left == 0 || c.left == 0) break;
      const size_t m =
          std::min({a.left, b.left, c.left, a.at.avail(), b.at.avail(), c.at.avail()}) & ~size_t{7};
      const uint8_t *pa = a.at.data(), *pb = b.at.data(), *pc = c.at.data();
      for (size_t i = 0; i < m; i += 8) {
        a.reg = _mm_crc32_u64(a.reg, Load64(pa + i));
        b.reg = _mm_crc32_u64(b.reg, Load64(pb + i));
        c.reg = _mm_crc32_u64(c.reg, Load64(pc + i));
      }
      for (Lane* l : {&a, &b, &c}) {
        l->at.Advance(m);
        l->left -= m;
      }
    }
    a.Finish();
    b.Finish();
    c.Finish();
    reg = shift.two(static_cast<uint32_t>(a.reg)) ^ shift.one(static_cast<uint32_t>(b.reg)) ^
          static_cast<uint32_t>(c.reg);
    at = c.at;
  }
  return reg;
}

bool HaveSse42() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}
#endif

}  // namespace

uint32_t Crc32c(const void* data, size_t n, uint32_t crc) {
#if defined(__x86_64__)
  if (HaveSse42()) return Crc32cSse42(static_cast<const uint8_t*>(data), n, crc);
#endif
  return Crc32cPortable(data, n, crc);
}

uint32_t Crc32c(absl::Span<const absl::string_view> parts, uint32_t crc) {
#if defined(__x86_64__)
  if (HaveSse42()) {
    size_t n = 0;
    for (absl::string_view p : parts) n += p.size();
    Cursor at(parts.data(), parts.data() + parts.size());
    crc = ~static_cast<uint32_t>(StripesAcross(at, n, ~crc));
    while (n > 0) {  // under three lanes' worth left: range by range
      const size_t take = std::min(n, at.avail());
      crc = Crc32cSse42(at.data(), take, crc);
      at.Advance(take);
      n -= take;
    }
    return crc;
  }
#endif
  for (absl::string_view p : parts) crc = Crc32cPortable(p.data(), p.size(), crc);
  return crc;
}

uint32_t Crc32cPortable(const void* data, size_t n, uint32_t crc) {
  const auto& t = GetTables().t;
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  while (n >= 8) {
    const uint32_t lo =
        crc ^ (static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
               static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24);
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
          t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xff];
  return ~crc;
}

}  // namespace kvstream::codec
