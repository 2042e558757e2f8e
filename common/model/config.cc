#include "common/model/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"

namespace kvstream::model {
namespace {

using nlohmann::json;

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view text,
                                                  absl::string_view source) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  ModelConfig c;
  auto fail = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  };
  if (!j.contains("architectures") || !j["architectures"].is_array() ||
      j["architectures"].empty() || !j["architectures"][0].is_string()) {
    return fail(
        "expected \"architectures\": [\"Qwen2ForCausalLM\" | \"LlamaForCausalLM\" | "
        "\"MistralForCausalLM\"]");
  }
  c.architecture = j["architectures"][0].get<std::string>();
  if (c.architecture != "Qwen2ForCausalLM" && c.architecture != "LlamaForCausalLM" &&
      c.architecture != "MistralForCausalLM") {
    return fail(absl::StrCat("architecture ", c.architecture,
                             " is not supported (Qwen2, Llama or Mistral ForCausalLM)"));
  }
  auto get_int = [&](const char* key, int* out, bool required) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) {
      if (required) return fail(absl::StrCat("missing integer field \"", key, "\""));
      return absl::OkStatus();
    }
    if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0 ||
        j[key].get<int64_t>() > (int64_t{1} << 31) - 1) {
      return fail(absl::StrCat("\"", key, "\" must be a positive integer, found ", j[key].dump()));
    }
    *out = j[key].get<int>();
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(get_int("vocab_size", &c.vocab_size, true));
  RETURN_IF_ERROR(get_int("hidden_size", &c.hidden_size, true));
  RETURN_IF_ERROR(get_int("intermediate_size", &c.intermediate_size, true));
  RETURN_IF_ERROR(get_int("num_hidden_layers", &c.num_layers, true));
  RETURN_IF_ERROR(get_int("num_attention_heads", &c.num_heads, true));
  c.num_kv_heads = c.num_heads;
  RETURN_IF_ERROR(get_int("num_key_value_heads", &c.num_kv_heads, false));
  c.head_dim = c.hidden_size / c.num_heads;
  RETURN_IF_ERROR(get_int("head_dim", &c.head_dim, false));
  c.max_position_embeddings = 32768;
  RETURN_IF_ERROR(get_int("max_position_embeddings", &c.max_position_embeddings, false));
  if (c.num_heads % c.num_kv_heads != 0) {
    return fail(absl::StrCat("num_attention_heads ", c.num_heads,
                             " must be a multiple of num_key_value_heads ", c.num_kv_heads));
  }
  if (j.contains("rms_norm_eps") && j["rms_norm_eps"].is_number()) {
    c.rms_norm_eps = j["rms_norm_eps"].get<double>();
  }
  if (j.contains("rope_theta") && j["rope_theta"].is_number()) {
    c.rope_theta = j["rope_theta"].get<double>();
  } else if (j.contains("rope_parameters") && j["rope_parameters"].is_object() &&
             j["rope_parameters"].contains("rope_theta") &&
             j["rope_parameters"]["rope_theta"].is_number()) {
    c.rope_theta = j["rope_parameters"]["rope_theta"].get<double>();
  }
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    return fail("rope_scaling is not supported");
  }
  if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean()) {
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (j.contains(key) && j[key].is_string()) c.torch_dtype = j[key].get<std::string>();
  }
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) {
    c.bos_token_id = j["bos_token_id"].get<int>();
  }
  if (j.contains("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<int>());
    if (e.is_array()) {
      for (const json& x : e) {
        if (x.is_number_integer()) c.eos_token_ids.push_back(x.get<int>());
      }
    }
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::Load(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadText(path));
  return FromJson(text, path);
}

std::string ModelConfig::ToJson() const {
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = architecture == "Qwen2ForCausalLM"     ? "qwen2"
                    : architecture == "MistralForCausalLM" ? "mistral"
                                                           : "llama";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  j["hidden_act"] = "silu";
  j["initializer_range"] = 0.02;
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
  return j.dump(2) + "\n";
}

}  // namespace kvstream::model
