#include "common/net/auth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

namespace kvstream::net {
namespace {

std::string TempFile(const std::string& name, const std::string& text) {
  const std::string path = "/tmp/kvstream-auth-" + std::to_string(::getpid()) + "-" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(AuthTest, Sha256MatchesTheStandardVector) {
  EXPECT_EQ(Sha256Hex("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(AuthTest, TokenFilesAreCheckedLineByLine) {
  auto ok = TokenAuthenticator::Load(TempFile(
      "ok", "# comment\n\nalpha " + Sha256Hex("a") + "\nbeta   " + Sha256Hex("b") + "  \n"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->size(), 2u);
  for (const std::string& bad : std::vector<std::string>{
           "alpha\n", "alpha xyz\n", "alpha " + Sha256Hex("a").substr(1) + "\n"}) {
    auto r = TokenAuthenticator::Load(TempFile("bad", "# first\n" + bad));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find(":2: expected 'TENANT SHA256HEX [models=A,B]"),
              std::string::npos)
        << r.status();
  }
  EXPECT_EQ(TokenAuthenticator::Load("/nonexistent/tokens").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(AuthTest, TokensCarryTheirTenantsRightsAndQuotas) {
  auto a = TokenAuthenticator::Load(
      TempFile("rights", "lab " + Sha256Hex("l") +
                             " models=large,scout max_sessions=4\tmax_cache_bytes=268435456\n" +
                             "open " + Sha256Hex("o") + "\n"));
  ASSERT_TRUE(a.ok()) << a.status();
  auto lab = (*a)->Lookup("l");
  ASSERT_TRUE(lab.ok()) << lab.status();
  EXPECT_EQ(lab->name, "lab");
  EXPECT_EQ(lab->models, (std::vector<std::string>{"large", "scout"}));
  EXPECT_EQ(lab->max_sessions, 4u);
  EXPECT_EQ(lab->max_cache_bytes, 268435456u);
  EXPECT_TRUE(lab->MayUse("large"));
  EXPECT_FALSE(lab->MayUse("huge"));
  auto open = (*a)->Lookup("o");
  ASSERT_TRUE(open.ok());
  EXPECT_TRUE(open->MayUse("anything")) << "no models= list: every model";
  EXPECT_EQ(open->max_sessions, 0u);
  EXPECT_EQ((*a)->Lookup("nope").status().code(), absl::StatusCode::kUnauthenticated);
  for (const std::string& bad : {std::string(" extra"), std::string(" max_sessions=0"),
                                 std::string(" max_cache_bytes=-1"), std::string(" models=")}) {
    auto r = TokenAuthenticator::Load(TempFile("badright", "x " + Sha256Hex("x") + bad + "\n"));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find(":1: expected models=A,B, max_sessions=N or "
                                        "max_cache_bytes=N"),
              std::string::npos)
        << r.status();
  }
}

TEST(AuthTest, ReloadKeepsTheOldTokensWhenTheFileIsBad) {
  const std::string path = TempFile("reload", "alpha " + Sha256Hex("a") + "\n");
  auto auth = TokenAuthenticator::Load(path);
  ASSERT_TRUE(auth.ok());
  std::ofstream(path) << "broken line\n";
  EXPECT_FALSE((*auth)->Reload().ok());
  EXPECT_EQ((*auth)->size(), 1u);
  std::ofstream(path) << "alpha " << Sha256Hex("a") << "\ngamma " << Sha256Hex("c") << "\n";
  EXPECT_TRUE((*auth)->Reload().ok());
  EXPECT_EQ((*auth)->size(), 2u);
}

TEST(AuthTest, BearerTokenFilesAreTrimmedAndMustHoldAToken) {
  EXPECT_EQ(*ReadBearerToken(TempFile("token", "  secret\n")), "secret");
  EXPECT_EQ(ReadBearerToken(TempFile("empty", " \n")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvstream::net
