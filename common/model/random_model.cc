#include "common/model/random_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace kvstream::model {
namespace {

using json = nlohmann::json;
using TensorList = std::vector<std::pair<std::string, std::vector<int64_t>>>;

ModelPreset Qwen25(const char* name, int hidden, int intermediate, int layers, int heads,
                   int kv_heads, int vocab, bool tied) {
  ModelPreset p;
  p.name = name;
  ModelConfig& c = p.config;
  c.architecture = "Qwen2ForCausalLM";
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.max_position_embeddings = 32768;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1e6;
  c.tie_word_embeddings = tied;
  c.bos_token_id = 151643;
  c.eos_token_ids = {151645};
  return p;
}

ModelPreset Qwen3_06b() {
  ModelPreset p = Qwen25("qwen3-0.6b", 1024, 3072, 28, 16, 8, 151936, true);
  ModelConfig& c = p.config;
  c.architecture = "Qwen3ForCausalLM";
  c.head_dim = 128;  // explicit: heads x head_dim is not hidden_size
  c.max_position_embeddings = 40960;
  c.qk_norm = true;
  p.attention_bias = false;
  return p;
}

ModelPreset Llama32_1b() {
  ModelPreset p;
  p.name = "llama-3.2-1b";
  p.attention_bias = false;
  ModelConfig& c = p.config;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 128256;
  c.hidden_size = 2048;
  c.intermediate_size = 8192;
  c.num_layers = 16;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 64;
  c.max_position_embeddings = 131072;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 32;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position_embeddings = 8192;
  c.tie_word_embeddings = true;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001};
  return p;
}

// Deterministic per (seed, tensor index), so a tensor's values do not depend on the
// shard layout.
class Normalish {
 public:
  explicit Normalish(uint64_t seed) : s_(seed) {}
  // Sum of four 16-bit uniforms, centred and scaled to unit variance.
  float Next() {
    const uint64_t r = SplitMix();
    const double sum = static_cast<double>((r & 0xffff) + ((r >> 16) & 0xffff) +
                                           ((r >> 32) & 0xffff) + (r >> 48)) /
                       65536.0;
    return static_cast<float>((sum - 2.0) * std::sqrt(3.0));
  }

 private:
  uint64_t SplitMix() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t s_;
};

uint16_t ToBf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

uint64_t Numel(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

// Writes one tensor's values in blocks: norms 1, biases 0, everything else N(0, std).
void WriteTensor(std::ofstream& out, const std::string& name, uint64_t numel,
                 const RandomModelOptions& o, uint64_t tensor_index) {
  const bool norm = name.find("norm") != std::string::npos;
  const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  Normalish rng(o.seed * 0x100000001B3ull + tensor_index);
  const int width = StDTypeBytes(o.dtype);
  std::vector<char> block(static_cast<size_t>(1 << 20) * width);
  for (uint64_t done = 0; done < numel;) {
    const uint64_t n = std::min<uint64_t>(numel - done, 1 << 20);
    for (uint64_t i = 0; i < n; ++i) {
      const float v = norm ? 1.0f : bias ? 0.0f : static_cast<float>(o.std) * rng.Next();
      if (o.dtype == StDType::kF32) {
        std::memcpy(block.data() + 4 * i, &v, 4);
      } else {
        const uint16_t h = ToBf16(v);
        std::memcpy(block.data() + 2 * i, &h, 2);
      }
    }
    out.write(block.data(), static_cast<std::streamsize>(n * width));
    done += n;
  }
}

absl::Status WriteShard(const std::string& path, const TensorList& tensors, size_t begin,
                        size_t end, const RandomModelOptions& o) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (size_t i = begin; i < end; ++i) {
    const uint64_t bytes = Numel(tensors[i].second) * StDTypeBytes(o.dtype);
    header[tensors[i].first] = {{"dtype", StDTypeName(o.dtype)},
                                {"shape", tensors[i].second},
                                {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write"));
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (size_t i = begin; i < end; ++i) {
    WriteTensor(out, tensors[i].first, Numel(tensors[i].second), o, i);
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed (disk full?)"));
  return absl::OkStatus();
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace

const std::vector<ModelPreset>& ModelPresets() {
  static const auto* presets = new std::vector<ModelPreset>{
      Qwen25("qwen2.5-0.5b", 896, 4864, 24, 14, 2, 151936, true),
      Qwen25("qwen2.5-1.5b", 1536, 8960, 28, 12, 2, 151936, true),
      Qwen25("qwen2.5-3b", 2048, 11008, 36, 16, 2, 151936, true),
      Qwen25("qwen2.5-7b", 3584, 18944, 28, 28, 4, 152064, false),
      Qwen3_06b(),
      Llama32_1b(),
  };
  return *presets;
}

absl::StatusOr<ModelPreset> FindModelPreset(const std::string& name) {
  std::vector<std::string> names;
  for (const ModelPreset& p : ModelPresets()) {
    if (p.name == name) return p;
    names.push_back(p.name);
  }
  return absl::NotFoundError(absl::StrCat("no model preset \"", name,
                                          "\"; expected one of: ", absl::StrJoin(names, ", ")));
}

TensorList ModelTensors(const ModelPreset& preset) {
  const ModelConfig& c = preset.config;
  const int64_t h = c.hidden_size, q = int64_t{c.num_heads} * c.head_dim,
                kv = int64_t{c.num_kv_heads} * c.head_dim, i = c.intermediate_size;
  TensorList t = {{"model.embed_tokens.weight", {c.vocab_size, h}}};
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    t.push_back({p + "input_layernorm.weight", {h}});
    t.push_back({p + "self_attn.q_proj.weight", {q, h}});
    t.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    t.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    if (preset.attention_bias) {
      t.push_back({p + "self_attn.q_proj.bias", {q}});
      t.push_back({p + "self_attn.k_proj.bias", {kv}});
      t.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    t.push_back({p + "self_attn.o_proj.weight", {h, q}});
    if (c.qk_norm) {
      t.push_back({p + "self_attn.q_norm.weight", {c.head_dim}});
      t.push_back({p + "self_attn.k_norm.weight", {c.head_dim}});
    }
    t.push_back({p + "post_attention_layernorm.weight", {h}});
    t.push_back({p + "mlp.gate_proj.weight", {i, h}});
    t.push_back({p + "mlp.up_proj.weight", {i, h}});
    t.push_back({p + "mlp.down_proj.weight", {h, i}});
  }
  t.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {c.vocab_size, h}});
  return t;
}

absl::Status WriteRandomModel(const ModelPreset& preset, const RandomModelOptions& o,
                              const std::string& dir) {
  const TensorList tensors = ModelTensors(preset);
  if (o.shards < 1 || static_cast<size_t>(o.shards) > tensors.size()) {
    return absl::InvalidArgumentError(absl::StrCat("shards: expected 1 to ", tensors.size(),
                                                   " for this model, found ", o.shards));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir, ": ", ec.message()));
  ModelConfig c = preset.config;
  c.torch_dtype = o.dtype == StDType::kF32 ? "float32" : "bfloat16";
  if (absl::Status s = WriteText(dir + "/config.json", c.ToJson()); !s.ok()) return s;
  uint64_t total = 0;
  for (const auto& t : tensors) total += Numel(t.second) * StDTypeBytes(o.dtype);
  // Shards of about equal bytes, tensors in model order.
  json weight_map = json::object();
  size_t begin = 0;
  uint64_t written = 0;
  for (int s = 0; s < o.shards; ++s) {
    size_t end = begin;
    const uint64_t goal = total * (s + 1) / o.shards;
    const size_t last = tensors.size() - static_cast<size_t>(o.shards - s - 1);
    do {
      written += Numel(tensors[end].second) * StDTypeBytes(o.dtype);
      ++end;
    } while (end < last && (written < goal || s == o.shards - 1));
    const std::string file =
        o.shards == 1 ? "model.safetensors"
                      : absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, o.shards);
    if (absl::Status st = WriteShard(absl::StrCat(dir, "/", file), tensors, begin, end, o);
        !st.ok()) {
      return st;
    }
    for (size_t i = begin; i < end; ++i) weight_map[tensors[i].first] = file;
    begin = end;
  }
  if (o.shards == 1) return absl::OkStatus();
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  return WriteText(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace kvstream::model
