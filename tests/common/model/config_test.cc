#include "common/model/config.h"

#include <gtest/gtest.h>

namespace kvstream::model {
namespace {

// Trimmed from Qwen2.5-7B-Instruct's config.json.
constexpr char kQwen7B[] = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
  "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28,
  "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
  "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 131072, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 152064})";

TEST(ConfigTest, ParsesARealQwenConfig) {
  auto c = ModelConfig::FromJson(kQwen7B, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c->num_layers, 28);
  EXPECT_EQ(c->num_heads, 28);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->rope_theta, 1e6);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{151645});
}

TEST(ConfigTest, AcceptsNewerFieldSpellings) {
  auto c = ModelConfig::FromJson(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
      "head_dim": 6, "dtype": "float16", "rope_parameters": {"rope_theta": 500000.0,
      "rope_type": "default"}, "eos_token_id": [3, 4], "tie_word_embeddings": true})",
                                 "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->torch_dtype, "float16");
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->head_dim, 6);
  EXPECT_EQ(c->num_kv_heads, 2);  // defaults to num_attention_heads
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{3, 4}));
}

TEST(ConfigTest, ToJsonRoundTrips) {
  auto c = ModelConfig::FromJson(kQwen7B, "config.json");
  auto again = ModelConfig::FromJson(c->ToJson(), "again");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->hidden_size, c->hidden_size);
  EXPECT_EQ(again->num_kv_heads, c->num_kv_heads);
  EXPECT_EQ(again->rope_theta, c->rope_theta);
  EXPECT_EQ(again->eos_token_ids, c->eos_token_ids);
}

TEST(ConfigTest, ErrorsNameTheFileAndField) {
  struct Bad {
    const char* json;
    const char* needle;
  };
  for (const Bad& b : std::initializer_list<Bad>{
           {"[1]", "cfg.json: not a JSON object"},
           {"{", "not a JSON object"},
           {R"({"architectures": ["GPT2LMHeadModel"]})",
            "architecture GPT2LMHeadModel is not supported"},
           {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10})",
            "missing integer field \"hidden_size\""},
           {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": -1})",
            "\"vocab_size\" must be a positive integer, found -1"},
           {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
               "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 3,
               "num_key_value_heads": 2})",
            "must be a multiple of num_key_value_heads"},
           // Found with common/model/config_fuzz.cc: each used to load, and not round-trip.
           {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 2,
               "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4})",
            "hidden_size 2 is smaller than num_attention_heads 4 and no head_dim is given"},
           {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
               "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
               "bos_token_id": -5})",
            "\"bos_token_id\" must be a token id (a non-negative integer), found -5"},
           {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
               "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
               "rope_theta": 0})",
            "\"rope_theta\" must be a positive number, found 0"},
           {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
               "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
               "eos_token_id": ["</s>"]})",
            "\"eos_token_id\" must be a token id"},
           {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
               "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
               "tie_word_embeddings": "yes"})",
            "\"tie_word_embeddings\" must be true or false, found \"yes\""},
       }) {
    auto c = ModelConfig::FromJson(b.json, "cfg.json");
    ASSERT_FALSE(c.ok()) << b.json;
    EXPECT_NE(c.status().message().find(b.needle), std::string::npos) << c.status().message();
  }
  EXPECT_EQ(ModelConfig::Load("/nonexistent/config.json").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvstream::model
