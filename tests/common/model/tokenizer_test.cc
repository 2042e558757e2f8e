#include "common/model/tokenizer.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace kvstream::model {
namespace {

using nlohmann::json;

// A byte-level BPE tokenizer.json: the 256 byte tokens (ids 0-255), "ab" (256) from one
// merge, <|end|> (300, special), NFC and the Qwen2-style Split pre-tokenizer in a
// Sequence with ByteLevel.
json Valid() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[CodepointToUtf8(ByteToUnicode()[b])] = b;
  vocab["ab"] = 256;
  json j;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b"})}};
  j["added_tokens"] = json::array({{{"id", 300}, {"content", "<|end|>"}, {"special", true}}});
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({{{"type", "Split"},
                                      {"pattern", {{"Regex", "[a-z]+| ?[^a-z ]+|\\s+"}}},
                                      {"behavior", "Isolated"},
                                      {"invert", false}},
                                     {{"type", "ByteLevel"}, {"use_regex", false}}})}};
  return j;
}

TEST(TokenizerTest, AMinimalTokenizerLoadsAndRoundTrips) {
  auto tok = Tokenizer::FromJson(Valid().dump(), "t.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("ab<|end|>b");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{256, 300, 'b'}));
  EXPECT_EQ((*tok)->Decode(*ids).value(), "ab<|end|>b");
  EXPECT_EQ((*tok)->vocab_size(), 301);
  EXPECT_TRUE((*tok)->IsSpecial(300));
}

// Every malformed or unsupported tokenizer.json is INVALID_ARGUMENT naming the file and
// the field, with what was expected and what was found; none throws.
TEST(TokenizerTest, MalformedFilesNameTheFieldAndWhatWasFound) {
  struct Bad {
    std::function<void(json&)> edit;
    const char* message;
  };
  const std::string a = CodepointToUtf8(ByteToUnicode()['a']);
  const std::vector<Bad> cases = {
      {[](json& j) { j = json::array(); }, "t.json: not a JSON object"},
      {[](json& j) { j.erase("model"); }, "expected a BPE model (\"model\": {\"type\": \"BPE\""},
      {[](json& j) { j["model"]["type"] = "WordPiece"; }, "found type \"WordPiece\""},
      {[](json& j) { j["model"]["type"] = 3; }, "model.type: expected a string, found 3"},
      {[](json& j) { j["model"]["vocab"] = json::array(); }, "model.vocab must be an object"},
      {[](json& j) { j["model"]["vocab"]["zz"] = -1; }, "vocab entry zz has a bad id -1"},
      {[](json& j) { j["model"]["vocab"]["zz"] = "7"; }, "vocab entry zz has a bad id \"7\""},
      {[](json& j) { j["model"]["vocab"]["zz"] = 20000000; }, "has a bad id 20000000"},
      {[](json& j) { j["model"]["vocab"]["zz"] = 256; }, "share id 256"},
      {[a](json& j) { j["model"]["vocab"].erase(a); },
       "vocab lacks the byte-level token for byte 97"},
      {[](json& j) { j["model"]["ignore_merges"] = "no"; },
       "model.ignore_merges: expected true or false, found \"no\""},
      {[](json& j) { j["model"]["merges"] = "a b"; }, "model.merges must be an array"},
      {[](json& j) { j["model"]["merges"][0] = "ab"; }, "merge 0 'ab' is not \"left right\""},
      {[](json& j) { j["model"]["merges"][0] = 5; },
       "merge 0 must be \"a b\" or [\"a\", \"b\"], found 5"},
      {[](json& j) { j["model"]["merges"][0] = "b a"; },
       "merge 0 (b, a) names a token missing from the vocab"},
      {[](json& j) { j["added_tokens"][0]["id"] = "300"; },
       "needs an id in 0..10000000 and non-empty content"},
      {[](json& j) { j["added_tokens"][0]["content"] = ""; }, "non-empty content"},
      {[](json& j) { j["added_tokens"][0]["id"] = 256; },
       "added token \"<|end|>\" has id 256, which \"ab\" already has"},
      {[](json& j) { j["added_tokens"][0]["special"] = 1; },
       "added token.special: expected true or false, found 1"},
      {[](json& j) { j["normalizer"]["type"] = "NFKC"; },
       "normalizer NFKC is not supported (NFC or null)"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"] = 1; },
       "pre_tokenizer.pretokenizers: expected an array of pre-tokenizers"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = 1; },
       "Split pre-tokenizer: pattern.Regex must be a string, found 1"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
       "Split pre-tokenizer must be behavior Isolated, invert false"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = "x"; },
       "Split pre-tokenizer.invert: expected true or false, found \"x\""},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = true; },
       "ByteLevel pre-tokenizer with use_regex=true is not supported"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["type"] = "Whitespace"; },
       "pre-tokenizer Whitespace is not supported"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a"; },
       "pre-tokenizer regex does not compile at offset 2"},
  };
  for (const Bad& b : cases) {
    json j = Valid();
    b.edit(j);
    auto tok = Tokenizer::FromJson(j.dump(), "t.json");
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << b.message;
    EXPECT_NE(tok.status().message().find(b.message), std::string::npos)
        << "expected: " << b.message << "\nfound: " << tok.status().message();
    EXPECT_EQ(tok.status().message().rfind("t.json: ", 0), 0u) << tok.status().message();
  }
  EXPECT_EQ(Tokenizer::Load("/nonexistent/tokenizer.json").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvstream::model
