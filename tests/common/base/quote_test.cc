#include "common/base/quote.h"

#include <gtest/gtest.h>

namespace kvstream::base {
namespace {

TEST(Quote, ShortTextWholeLongTextPrefixAndSize) {
  EXPECT_EQ(Quote("int4"), "'int4'");
  const std::string big(100000, 'x');
  const std::string q = Quote(big);
  EXPECT_LT(q.size(), 240u);
  EXPECT_NE(q.find("(100000 bytes)"), std::string::npos) << q;
  EXPECT_EQ(Bounded("short"), "short");
  EXPECT_LT(Bounded(big).size(), 1100u);
}

TEST(Quote, FindsTheFirstInvalidUtf8Byte) {
  EXPECT_EQ(InvalidUtf8At("plain ascii"), absl::string_view::npos);
  EXPECT_EQ(InvalidUtf8At("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), absl::string_view::npos);
  EXPECT_EQ(InvalidUtf8At("ab\xff"), 2u);             // never valid
  EXPECT_EQ(InvalidUtf8At("ab\xc3"), 2u);             // truncated sequence
  EXPECT_EQ(InvalidUtf8At("a\xc0\xaf"), 1u);          // overlong '/'
  EXPECT_EQ(InvalidUtf8At("a\xed\xa0\x80"), 1u);      // a surrogate
  EXPECT_EQ(InvalidUtf8At("a\xf4\x90\x80\x80"), 1u);  // past U+10FFFF
  EXPECT_EQ(InvalidUtf8At("a\xe2\x28\xa1"), 1u);      // bad continuation
}

}  // namespace
}  // namespace kvstream::base
