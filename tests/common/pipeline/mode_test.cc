#include "common/pipeline/mode.h"

#include <gtest/gtest.h>

namespace kvstream::pipeline {
namespace {

TEST(ModeTest, NamesRoundTripForEveryMode) {
  for (const Mode m :
       {kvstream::v1::MODE_KV, kvstream::v1::MODE_PROJECTED, kvstream::v1::MODE_SCOUT,
        kvstream::v1::MODE_TEXT, kvstream::v1::MODE_ADAPTIVE}) {
    absl::StatusOr<Mode> back = ParseMode(ModeName(m));
    ASSERT_TRUE(back.ok()) << ModeName(m) << ": " << back.status();
    EXPECT_EQ(*back, m);
  }
  EXPECT_STREQ(ModeName(kvstream::v1::MODE_UNSPECIFIED), "unspecified");
  EXPECT_STREQ(ModeName(static_cast<Mode>(77)), "unspecified");
}

TEST(ModeTest, ParseRefusesOtherNamesAndSaysWhatItExpected) {
  for (const char* bad : {"KV", "", "kv ", "unspecified", "projected-int4"}) {
    absl::StatusOr<Mode> m = ParseMode(bad);
    ASSERT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(m.status().message().find("expected kv, projected, scout, text or adaptive"),
              std::string::npos)
        << m.status();
  }
  absl::StatusOr<Mode> table = ParseMode("adaptive", /*allow_adaptive=*/false);
  ASSERT_FALSE(table.ok());
  EXPECT_NE(table.status().message().find("expected kv, projected, scout, text; found 'adaptive'"),
            std::string::npos)
      << table.status();
}

TEST(ModeTest, WhatEachModeImplies) {
  struct Row {
    Mode mode;
    bool answers, sends_cache, names_model, cloud_prefills;
  };
  for (const Row& r : {Row{kvstream::v1::MODE_KV, true, true, false, false},
                       Row{kvstream::v1::MODE_PROJECTED, true, true, true, false},
                       Row{kvstream::v1::MODE_SCOUT, true, false, true, true},
                       Row{kvstream::v1::MODE_TEXT, true, false, true, true},
                       Row{kvstream::v1::MODE_ADAPTIVE, false, false, false, false},
                       Row{kvstream::v1::MODE_UNSPECIFIED, false, false, false, false}}) {
    SCOPED_TRACE(ModeName(r.mode));
    EXPECT_EQ(Answers(r.mode), r.answers);
    EXPECT_EQ(SendsCache(r.mode), r.sends_cache);
    EXPECT_EQ(NamesCloudModel(r.mode), r.names_model);
    EXPECT_EQ(CloudPrefills(r.mode), r.cloud_prefills);
  }
}

}  // namespace
}  // namespace kvstream::pipeline
