#include "edge/replicas.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kvstream::edge {
namespace {

using ::testing::ElementsAre;

TEST(TargetAddressesTest, ListsAddressListsAndResolvesNames) {
  EXPECT_THAT(*TargetAddresses("ipv4:127.0.0.1:5000,127.0.0.1:5001"),
              ElementsAre("127.0.0.1:5000", "127.0.0.1:5001"));
  EXPECT_THAT(*TargetAddresses("ipv6:[::1]:5000"), ElementsAre("[::1]:5000"));
  EXPECT_THAT(*TargetAddresses("127.0.0.1:5000"), ElementsAre("127.0.0.1:5000"));
  EXPECT_THAT(*TargetAddresses("dns:///127.0.0.1:5000"), ElementsAre("127.0.0.1:5000"));
  EXPECT_THAT(*TargetAddresses("dns://8.8.8.8/127.0.0.1:5000"), ElementsAre("127.0.0.1:5000"));
  const auto local = TargetAddresses("localhost:5000");
  ASSERT_TRUE(local.ok()) << local.status();
  ASSERT_FALSE(local->empty());
  for (const std::string& a : *local)
    EXPECT_TRUE(a.size() > 5 && a.substr(a.size() - 5) == ":5000");
}

TEST(TargetAddressesTest, OtherSchemesListNothingAndBadTargetsSayWhy) {
  EXPECT_TRUE(TargetAddresses("unix:/run/kvstream.sock")->empty());
  EXPECT_TRUE(TargetAddresses("xds:///cloud")->empty());
  const auto bad = TargetAddresses("ipv4:127.0.0.1");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("expected HOST:PORT"), std::string::npos) << bad.status();
  EXPECT_EQ(TargetAddresses("ipv4:").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TargetAddresses("no-such-host.invalid:5000").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ExpectedCardTest, MostReplicasWinTiesGoToTheEarliest) {
  EXPECT_EQ(ExpectedCard({{"a", "x", ""}, {"b", "y", ""}, {"c", "y", ""}}), "y");
  EXPECT_EQ(ExpectedCard({{"a", "x", ""}, {"b", "y", ""}}), "x");
  EXPECT_EQ(ExpectedCard({{"a", "", "down"}, {"b", "y", ""}}), "y");
  EXPECT_EQ(ExpectedCard({{"a", "", "down"}}), "");
  EXPECT_EQ(HealthServiceFor(""), "kvstream.v1.CloudService");
  EXPECT_EQ(HealthServiceFor("ab12"), "kvstream.v1.CloudService/ab12");
}

}  // namespace
}  // namespace kvstream::edge
