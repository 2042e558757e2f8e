#include "common/codec/bitpack.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace kvstream::codec {
namespace {

TEST(BitpackTest, ExhaustiveSmallInputsEveryWidth) {
  // Every combination of codes for n * bits <= 12 round-trips, in exactly ceil(n*b/8)
  // bytes, with the unused high bits of the last byte zero.
  for (int bits = 1; bits <= 8; ++bits) {
    for (int n = 0; n * bits <= 12; ++n) {
      const uint32_t combos = 1u << (n * bits);
      for (uint32_t c = 0; c < combos; ++c) {
        std::vector<uint8_t> codes(n);
        for (int i = 0; i < n; ++i) codes[i] = (c >> (i * bits)) & ((1u << bits) - 1);
        std::vector<uint8_t> packed(PackedBytes(n, bits) + 1, 0xEE);
        PackBits(codes.data(), n, bits, packed.data());
        ASSERT_EQ(packed.back(), 0xEE) << "wrote past ceil(n*b/8)";
        // Bit i*b+j of the stream holds bit j of code i (LSB first).
        for (int i = 0; i < n; ++i) {
          for (int j = 0; j < bits; ++j) {
            const int bit = i * bits + j;
            ASSERT_EQ((packed[bit / 8] >> (bit % 8)) & 1, (codes[i] >> j) & 1);
          }
        }
        if ((n * bits) % 8) {
          ASSERT_EQ(packed[PackedBytes(n, bits) - 1] >> ((n * bits) % 8), 0);
        }
        std::vector<uint8_t> back(n);
        UnpackBits(packed.data(), n, bits, back.data());
        ASSERT_EQ(back, codes) << "bits " << bits << " n " << n << " combo " << c;
      }
    }
  }
}

TEST(BitpackTest, PiecewisePutsMatchOneShotAcrossByteBoundaries) {
  std::mt19937 rng(1);
  for (int bits = 1; bits <= 8; ++bits) {
    for (int trial = 0; trial < 50; ++trial) {
      const size_t n = rng() % 300;
      std::vector<uint8_t> codes(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      std::vector<uint8_t> one(PackedBytes(n, bits)), pieces(one.size());
      PackBits(codes.data(), n, bits, one.data());
      BitWriter w(pieces.data(), bits);
      std::vector<size_t> cuts;
      for (size_t i = 0; i < n;) {
        const size_t len = std::min(n - i, static_cast<size_t>(rng() % 20));
        w.Put(codes.data() + i, len);
        cuts.push_back(len);
        i += len;
      }
      w.Finish();
      ASSERT_EQ(one, pieces) << "bits " << bits;
      // Read back with the same irregular cuts.
      BitReader r(one.data(), one.data() + one.size(), bits);
      std::vector<uint8_t> back(n);
      size_t at = 0;
      for (size_t len : cuts) {
        r.Get(back.data() + at, len);
        at += len;
      }
      ASSERT_EQ(back, codes) << "bits " << bits;
    }
  }
}

// The layout is fixed by the format: code i's bit j is bit i * bits + j of the stream,
// least significant bit first. A packer written here bit by bit pins it for every
// width and for runs long enough to take the writer's and reader's fast paths.
TEST(BitpackTest, LongRunsHaveTheFormatsBitLayout) {
  std::mt19937 rng(7);
  for (int bits = 1; bits <= 8; ++bits) {
    for (size_t n : {8u, 9u, 16u, 63u, 64u, 100u, 257u}) {
      std::vector<uint8_t> codes(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      std::vector<uint8_t> want(PackedBytes(n, bits), 0);
      for (size_t i = 0; i < n; ++i) {
        for (int j = 0; j < bits; ++j) {
          const size_t at = i * bits + j;
          if ((codes[i] >> j) & 1) want[at / 8] |= static_cast<uint8_t>(1u << (at % 8));
        }
      }
      std::vector<uint8_t> got(want.size());
      PackBits(codes.data(), n, bits, got.data());
      ASSERT_EQ(got, want) << "bits " << bits << ", n " << n;
      std::vector<uint8_t> back(n);
      UnpackBits(want.data(), n, bits, back.data());
      ASSERT_EQ(back, codes) << "bits " << bits << ", n " << n;
    }
  }
}

}  // namespace
}  // namespace kvstream::codec
