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

namespace {

// A rope_scaling (or rope_parameters) object; type "" for none ("default").
absl::StatusOr<RopeScaling> ParseRopeScaling(const json& o, const char* key) {
  RopeScaling r;
  std::string type = "default";
  for (const char* t : {"rope_type", "type"}) {
    if (o.contains(t) && o[t].is_string()) type = o[t].get<std::string>();
  }
  if (type == "default") return r;
  if (type != "linear" && type != "llama3" && type != "yarn") {
    return absl::InvalidArgumentError(absl::StrCat(
        key, ".rope_type \"", type, "\" is not supported (supported: linear, llama3, yarn)"));
  }
  r.type = type;
  auto number = [&](const char* name, double* out) -> absl::Status {
    if (!o.contains(name) || o[name].is_null()) return absl::OkStatus();
    if (!o[name].is_number() || !(o[name].get<double>() > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, ".", name, " must be a positive number, found ", o[name].dump()));
    }
    *out = o[name].get<double>();
    return absl::OkStatus();
  };
  if (!o.contains("factor")) {
    return absl::InvalidArgumentError(absl::StrCat(key, " of type ", type, " needs \"factor\""));
  }
  RETURN_IF_ERROR(number("factor", &r.factor));
  RETURN_IF_ERROR(number("low_freq_factor", &r.low_freq_factor));
  RETURN_IF_ERROR(number("high_freq_factor", &r.high_freq_factor));
  RETURN_IF_ERROR(number("beta_fast", &r.beta_fast));
  RETURN_IF_ERROR(number("beta_slow", &r.beta_slow));
  RETURN_IF_ERROR(number("attention_factor", &r.attention_factor));
  double original = 0;
  RETURN_IF_ERROR(number("original_max_position_embeddings", &original));
  r.original_max_position_embeddings = static_cast<int>(original);
  if (o.contains("truncate") && o["truncate"].is_boolean()) r.truncate = o["truncate"].get<bool>();
  if (type == "llama3" && !(r.high_freq_factor > r.low_freq_factor)) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": high_freq_factor ", r.high_freq_factor,
                                                   " must exceed low_freq_factor ",
                                                   r.low_freq_factor));
  }
  return r;
}

}  // namespace

bool RopeScaling::operator==(const RopeScaling& o) const {
  return type == o.type && factor == o.factor && low_freq_factor == o.low_freq_factor &&
         high_freq_factor == o.high_freq_factor &&
         original_max_position_embeddings == o.original_max_position_embeddings &&
         beta_fast == o.beta_fast && beta_slow == o.beta_slow &&
         attention_factor == o.attention_factor && truncate == o.truncate;
}

namespace {

// Reads config.json's fields into a ModelConfig; every error names `source` and the
// field. Optional fields absent or null keep their defaults; present, they must have
// their type.
class ConfigReader {
 public:
  ConfigReader(const json& j, absl::string_view source) : j_(j), source_(source) {}

  absl::StatusOr<ModelConfig> Read() {
    ModelConfig c;
    RETURN_IF_ERROR(Architecture(c));
    RETURN_IF_ERROR(Shape(c));
    RETURN_IF_ERROR(Positive(j_, "rms_norm_eps", &c.rms_norm_eps));
    RETURN_IF_ERROR(Rope(c));
    if (Present(j_, "tie_word_embeddings")) {
      if (!j_["tie_word_embeddings"].is_boolean()) {
        return Fail("\"tie_word_embeddings\" must be true or false, found ",
                    j_["tie_word_embeddings"].dump());
      }
      c.tie_word_embeddings = j_["tie_word_embeddings"].get<bool>();
    }
    for (const char* key : {"torch_dtype", "dtype"}) {
      if (!Present(j_, key)) continue;
      if (!j_[key].is_string())
        return Fail("\"", key, "\" must be a string, found ", j_[key].dump());
      c.torch_dtype = j_[key].get<std::string>();
    }
    if (Present(j_, "bos_token_id")) {
      RETURN_IF_ERROR(TokenId(j_["bos_token_id"], "bos_token_id", &c.bos_token_id));
    }
    if (Present(j_, "eos_token_id")) {
      const json& e = j_["eos_token_id"];
      for (const json& x : e.is_array() ? e : json::array({e})) {
        int id = 0;
        RETURN_IF_ERROR(TokenId(x, "eos_token_id", &id));
        c.eos_token_ids.push_back(id);
      }
    }
    return c;
  }

 private:
  template <typename... Parts>
  absl::Status Fail(const Parts&... parts) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", parts...));
  }
  static bool Present(const json& obj, const char* key) {
    return obj.contains(key) && !obj[key].is_null();
  }

  absl::Status Int(const char* key, int* out, bool required) const {
    if (!Present(j_, key)) {
      return required ? Fail("missing integer field \"", key, "\"") : absl::OkStatus();
    }
    if (!j_[key].is_number_integer() || j_[key].get<int64_t>() <= 0 ||
        j_[key].get<int64_t>() > (int64_t{1} << 31) - 1) {
      return Fail("\"", key, "\" must be a positive integer, found ", j_[key].dump());
    }
    *out = j_[key].get<int>();
    return absl::OkStatus();
  }
  absl::Status Positive(const json& obj, const char* key, double* out) const {
    if (!Present(obj, key)) return absl::OkStatus();
    if (!obj[key].is_number() || !(obj[key].get<double>() > 0)) {
      return Fail("\"", key, "\" must be a positive number, found ", obj[key].dump());
    }
    *out = obj[key].get<double>();
    return absl::OkStatus();
  }
  absl::Status TokenId(const json& v, const char* key, int* out) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > (int64_t{1} << 31) - 1) {
      return Fail("\"", key, "\" must be a token id (a non-negative integer), found ", v.dump());
    }
    *out = v.get<int>();
    return absl::OkStatus();
  }

  absl::Status Architecture(ModelConfig& c) const {
    if (!j_.contains("architectures") || !j_["architectures"].is_array() ||
        j_["architectures"].empty() || !j_["architectures"][0].is_string()) {
      return Fail(
          "expected \"architectures\": [\"Qwen2ForCausalLM\" | \"Qwen3ForCausalLM\" | "
          "\"LlamaForCausalLM\" | \"MistralForCausalLM\"]");
    }
    c.architecture = j_["architectures"][0].get<std::string>();
    if (c.architecture != "Qwen2ForCausalLM" && c.architecture != "Qwen3ForCausalLM" &&
        c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM") {
      return Fail("architecture ", c.architecture,
                  " is not supported (Qwen2, Qwen3, Llama or Mistral ForCausalLM)");
    }
    c.qk_norm = c.architecture == "Qwen3ForCausalLM";
    return absl::OkStatus();
  }

  // Sizes, heads and the position limit.
  absl::Status Shape(ModelConfig& c) const {
    RETURN_IF_ERROR(Int("vocab_size", &c.vocab_size, true));
    RETURN_IF_ERROR(Int("hidden_size", &c.hidden_size, true));
    RETURN_IF_ERROR(Int("intermediate_size", &c.intermediate_size, true));
    RETURN_IF_ERROR(Int("num_hidden_layers", &c.num_layers, true));
    RETURN_IF_ERROR(Int("num_attention_heads", &c.num_heads, true));
    c.num_kv_heads = c.num_heads;
    RETURN_IF_ERROR(Int("num_key_value_heads", &c.num_kv_heads, false));
    c.head_dim = c.hidden_size / c.num_heads;
    if (c.head_dim == 0 && !Present(j_, "head_dim")) {
      return Fail("hidden_size ", c.hidden_size, " is smaller than num_attention_heads ",
                  c.num_heads, " and no head_dim is given");
    }
    RETURN_IF_ERROR(Int("head_dim", &c.head_dim, false));
    c.max_position_embeddings = 32768;
    RETURN_IF_ERROR(Int("max_position_embeddings", &c.max_position_embeddings, false));
    if (c.num_heads % c.num_kv_heads != 0) {
      return Fail("num_attention_heads ", c.num_heads,
                  " must be a multiple of num_key_value_heads ", c.num_kv_heads);
    }
    return absl::OkStatus();
  }

  // RoPE's base (top level, or in rope_parameters) and scaling.
  absl::Status Rope(ModelConfig& c) const {
    if (Present(j_, "rope_theta")) {
      RETURN_IF_ERROR(Positive(j_, "rope_theta", &c.rope_theta));
    } else if (Present(j_, "rope_parameters") && j_["rope_parameters"].is_object()) {
      RETURN_IF_ERROR(Positive(j_["rope_parameters"], "rope_theta", &c.rope_theta));
    }
    for (const char* key : {"rope_scaling", "rope_parameters"}) {
      if (!Present(j_, key)) continue;
      if (!j_[key].is_object())
        return Fail("\"", key, "\" must be an object, found ", j_[key].dump());
      auto scaling = ParseRopeScaling(j_[key], key);
      if (!scaling.ok()) return Fail(scaling.status().message());
      if (!scaling->type.empty()) c.rope_scaling = *scaling;
    }
    return absl::OkStatus();
  }

  const json& j_;
  const absl::string_view source_;
};

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view text,
                                                  absl::string_view source) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  return ConfigReader(j, source).Read();
}

absl::StatusOr<ModelConfig> ModelConfig::Load(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadText(path));
  return FromJson(text, path);
}

std::string ModelConfig::ToJson() const {
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = architecture == "Qwen2ForCausalLM"     ? "qwen2"
                    : architecture == "Qwen3ForCausalLM"   ? "qwen3"
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
  if (!rope_scaling.type.empty()) {
    const RopeScaling& r = rope_scaling;
    json o = {{"rope_type", r.type}, {"factor", r.factor}};
    if (r.type == "llama3") {
      o["low_freq_factor"] = r.low_freq_factor;
      o["high_freq_factor"] = r.high_freq_factor;
    }
    if (r.type == "yarn") {
      o["beta_fast"] = r.beta_fast;
      o["beta_slow"] = r.beta_slow;
      o["truncate"] = r.truncate;
      if (r.attention_factor > 0) o["attention_factor"] = r.attention_factor;
    }
    if (r.original_max_position_embeddings > 0) {
      o["original_max_position_embeddings"] = r.original_max_position_embeddings;
    }
    j["rope_scaling"] = o;
  }
  j["torch_dtype"] = torch_dtype;
  j["hidden_act"] = "silu";
  j["initializer_range"] = 0.02;
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
  return j.dump(2) + "\n";
}

}  // namespace kvstream::model
