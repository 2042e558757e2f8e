// kvstream make-model: a random-weight model with a real configuration (Qwen2.5 shapes),
// for size, memory and speed work. Its answers are noise.
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/model/random_model.h"
#include "tools/kvstream/commands.h"

ABSL_FLAG(std::string, preset, "",
          "make-model: the shape, one of qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-3b, qwen2.5-7b, "
          "qwen3-0.6b, llama-3.2-1b");
ABSL_FLAG(int, layers, 0, "make-model: keep only this many layers (0: the preset's)");
ABSL_FLAG(std::string, dtype, "bf16", "make-model: weight dtype, bf16 or f32");
ABSL_FLAG(int, shards, 1, "make-model: safetensors files (> 1: with an index, as HF shards)");
ABSL_FLAG(uint64_t, weights_seed, 1, "make-model: seed of the random weights");

namespace kvstream::cli {
namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "kvstream make-model: %s\n", message.c_str());
  return 2;
}

}  // namespace

int RunMakeModel() {
  auto preset = model::FindModelPreset(absl::GetFlag(FLAGS_preset));
  if (!preset.ok()) return Fail(absl::StrCat("--preset: ", preset.status().message()));
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Fail("--out: the model directory to write is required");
  const int layers = absl::GetFlag(FLAGS_layers);
  if (layers < 0 || layers > preset->config.num_layers) {
    return Fail(
        absl::StrCat("--layers: expected 0 to ", preset->config.num_layers, ", found ", layers));
  }
  if (layers > 0) preset->config.num_layers = layers;
  model::RandomModelOptions o;
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype != "bf16" && dtype != "f32") {
    return Fail(absl::StrCat("--dtype: expected bf16 or f32, found \"", dtype, "\""));
  }
  o.dtype = dtype == "f32" ? model::StDType::kF32 : model::StDType::kBF16;
  o.shards = absl::GetFlag(FLAGS_shards);
  o.seed = absl::GetFlag(FLAGS_weights_seed);
  std::string tokenizer = absl::GetFlag(FLAGS_tokenizer);
  if (tokenizer.empty()) tokenizer = "testdata/models/tokenizer.json";
  if (!std::filesystem::is_regular_file(tokenizer)) {
    return Fail(absl::StrCat("--tokenizer: ", tokenizer, " is not a file"));
  }
  if (absl::Status s = model::WriteRandomModel(*preset, o, out); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  std::error_code ec;
  std::filesystem::copy_file(tokenizer, out + "/tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) return Fail(absl::StrCat("copying ", tokenizer, ": ", ec.message()));
  uint64_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(out)) {
    if (e.path().extension() == ".safetensors") bytes += e.file_size();
  }
  std::printf(
      "%s: %s, %d layers, %s, %d shard(s), %.1f MB of weights (random: answers are noise)\n",
      out.c_str(), preset->name.c_str(), preset->config.num_layers, dtype.c_str(), o.shards,
      bytes / 1e6);
  return 0;
}

}  // namespace kvstream::cli
