// PayloadView over ranges however they are cut: the bytes, their CRC (checked against the
// portable CRC of the same bytes in one buffer) and sub-views.
#include "common/codec/payload.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/codec/crc32c.h"

namespace kvstream::codec {
namespace {

std::string RandomBytes(size_t n, std::mt19937& rng) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// `bytes` cut into ranges of 0..max_part bytes (empty ones included).
std::vector<absl::string_view> Cut(const std::string& bytes, size_t max_part, std::mt19937& rng) {
  std::vector<absl::string_view> parts;
  for (size_t at = 0; at < bytes.size();) {
    const size_t n = std::min(bytes.size() - at, rng() % (max_part + 1));
    parts.push_back(absl::string_view(bytes).substr(at, n));
    at += n;
  }
  return parts;
}

// Lengths around the three-lane stripes (3 x 8 KiB) and cuts from a few bytes (many words
// and lanes straddle a boundary) to whole stripes.
TEST(PayloadViewTest, CrcOfRangesEqualsThePortableCrcOfTheBytes) {
  std::mt19937 rng(7);
  const std::string data = RandomBytes(200000, rng);
  for (size_t n : {0, 1, 9, 1536, 24575, 24576, 24583, 49159, 73728, 99999, 200000}) {
    const std::string bytes = data.substr(0, n);
    const uint32_t want = Crc32cPortable(bytes.data(), bytes.size(), 5);
    for (size_t max_part : {3, 17, 700, 8192, 65536, 300000}) {
      for (int trial = 0; trial < 4; ++trial) {
        const std::vector<absl::string_view> parts = Cut(bytes, max_part, rng);
        ASSERT_EQ(Crc32c(absl::MakeConstSpan(parts), 5), want)
            << n << " bytes in " << parts.size() << " ranges of up to " << max_part;
        if (trial == 0) {
          EXPECT_EQ(PayloadView(parts).Crc32c(), Crc32cPortable(bytes.data(), bytes.size()));
        }
      }
    }
  }
}

TEST(PayloadViewTest, CopyOutGetAndSubSeeTheBytesInOrder) {
  std::mt19937 rng(11);
  const std::string bytes = RandomBytes(5000, rng);
  for (size_t max_part : {1, 7, 300, 6000}) {
    const std::vector<absl::string_view> parts = Cut(bytes, max_part, rng);
    const PayloadView view(parts);
    ASSERT_EQ(view.size(), bytes.size());
    EXPECT_EQ(view.Flatten(), bytes);
    std::string scratch;
    for (int trial = 0; trial < 300; ++trial) {
      const size_t at = rng() % (bytes.size() + 1);
      const size_t n = rng() % (bytes.size() - at + 1);
      std::string out(n, '\0');
      ASSERT_TRUE(view.CopyOut(at, n, out.data()));
      EXPECT_EQ(out, bytes.substr(at, n)) << at << "+" << n;
      const uint8_t* got = view.Get(at, n, &scratch);
      ASSERT_NE(got, nullptr);
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(got), n), bytes.substr(at, n));
      const PayloadView sub = view.Sub(at, n);
      EXPECT_EQ(sub.size(), n);
      EXPECT_EQ(sub.Flatten(), bytes.substr(at, n));
    }
    // Past the end: nothing copied, no pointer.
    char c = 'x';
    EXPECT_FALSE(view.CopyOut(bytes.size(), 1, &c));
    EXPECT_FALSE(view.CopyOut(1, bytes.size(), &c));
    EXPECT_EQ(c, 'x');
    EXPECT_EQ(view.Get(bytes.size() - 1, 2, &scratch), nullptr);
    EXPECT_EQ(view.Sub(10, bytes.size()).size(), 0u);
  }
}

// Bytes inside one range are handed out in place; across two, from the scratch string.
TEST(PayloadViewTest, GetPointsIntoARangeAndGathersAcrossTwo) {
  const std::string a = "abcdef", b = "ghij";
  const absl::string_view parts[] = {a, "", b};
  const PayloadView view(parts);
  EXPECT_EQ(view.num_parts(), 2u);  // the empty range is dropped
  std::string scratch;
  EXPECT_EQ(reinterpret_cast<const char*>(view.Get(1, 4, &scratch)), a.data() + 1);
  EXPECT_EQ(reinterpret_cast<const char*>(view.Get(6, 4, &scratch)), b.data());
  const uint8_t* across = view.Get(4, 4, &scratch);
  EXPECT_EQ(reinterpret_cast<const char*>(across), scratch.data());
  EXPECT_EQ(scratch, "efgh");
}

}  // namespace
}  // namespace kvstream::codec
