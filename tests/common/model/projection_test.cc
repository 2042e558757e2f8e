// Cross-model projection: fitted maps recover known relations between models (a model
// onto itself; a model onto an exact re-parametrisation of itself), the mapped cache
// answers with the same tokens, and malformed or mismatched projection files are refused.
#include "common/model/projection.h"

#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/eval/tasks.h"
#include "common/model/chat.h"
#include "common/model/generate.h"
#include "common/model/safetensors.h"
#include "common/model/tokenizer.h"
#include "common/model/training.h"
#include "common/model/transformer.h"

namespace kvstream::model {
namespace {

namespace fs = std::filesystem;
constexpr char kScout[] = "testdata/models/scout";
constexpr char kLarge[] = "testdata/models/large";

fs::path TempDir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / absl::StrCat("kvstream-projection-", ::getpid(), "-", name);
  fs::create_directories(dir);
  return dir;
}

// Generated single-hop and needle prompts as the edge builds them, without the last token.
std::vector<std::vector<int32_t>> Prompts(int n, uint64_t seed) {
  auto tok = Tokenizer::Load(absl::StrCat(kScout, "/tokenizer.json")).value();
  auto words = eval::LoadWords().value();
  eval::TaskGenerator gen(
      words, [&](const std::string& s) { return static_cast<int>(tok->Encode(s, false)->size()); });
  gen.set_single_token_names(true);
  std::vector<std::vector<int32_t>> out;
  for (const char* kind : {"single", "needle"}) {
    eval::TaskOptions o;
    o.kind = kind;
    o.num_examples = n / 2;
    o.num_records = 12;
    o.target_tokens = 160;
    o.seed = seed;
    for (const eval::Example& ex : gen.Generate(o)) {
      ChatPrompt p =
          BuildQaPrompt(*tok, ex.context, ex.question, {"Answer with the value from the context."})
              .value();
      out.push_back(p.tokens);
    }
  }
  return out;
}

std::unique_ptr<Projection> FitOn(Model& source, Model& target, int prompts) {
  auto fitter = ProjectionFitter::Create(source, target, {});
  EXPECT_TRUE(fitter.ok()) << fitter.status();
  const auto ps = Prompts(prompts, 501);
  for (size_t i = 0; i < ps.size(); ++i) {
    const std::vector<int32_t> head(ps[i].begin(), ps[i].end() - 1);
    EXPECT_TRUE((*fitter)->AddPrompt(head, i % 4 == 3).ok());
  }
  auto p = (*fitter)->Fit();
  EXPECT_TRUE(p.ok()) << p.status();
  return std::move(*p);
}

// Greedy answers from `answerer` on caches built by `source` and mapped by `projection`
// (null: the source's own cache), for held-out prompts.
std::vector<std::vector<int32_t>> Answers(Model& source, Model& answerer,
                                          const Projection* projection) {
  std::vector<std::vector<int32_t>> out;
  SamplingOptions sampling;
  sampling.max_new_tokens = 6;
  for (const auto& prompt : Prompts(20, 777)) {
    const std::vector<int32_t> head(prompt.begin(), prompt.end() - 1);
    auto pre = source.Prefill(head);
    EXPECT_TRUE(pre.ok());
    std::unique_ptr<KvCache> cache = std::move(pre->cache);
    if (projection != nullptr) {
      auto mapped = projection->Apply(*cache, answerer);
      EXPECT_TRUE(mapped.ok()) << mapped.status();
      cache = std::move(*mapped);
    }
    out.push_back(Generate(answerer, *cache, prompt.back(), sampling).value().tokens);
  }
  return out;
}

TEST(ProjectionLayerMap, BracketsTheRelativeDepth) {
  EXPECT_EQ(*ProjectionLayerMap("bracket", 4, 4),
            (std::vector<std::vector<int>>{{0}, {1}, {2}, {3}}));
  EXPECT_EQ(*ProjectionLayerMap("bracket", 4, 6),
            (std::vector<std::vector<int>>{{0}, {0, 1}, {1, 2}, {1, 2}, {2, 3}, {3}}));
  EXPECT_EQ(*ProjectionLayerMap("all", 2, 2), (std::vector<std::vector<int>>{{0, 1}, {0, 1}}));
  EXPECT_EQ(ProjectionLayerMap("nearest", 2, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Projection, OntoItselfIsTheIdentityAndAnswersAlike) {
  auto scout = Model::Load(kScout).value();
  auto p = FitOn(*scout, *scout, 16);
  ASSERT_NE(p, nullptr);
  for (const ProjectionLayer& l : p->header().layers) {
    EXPECT_GT(l.r2_k, 0.9999);
    EXPECT_GT(l.r2_v, 0.9999);
  }
  // The mapped cache is the cache. (The maps are the identity on the span of the data;
  // a coordinate that never varies is carried by the unpenalised bias instead, so the
  // matrices themselves need not be the identity.)
  for (const auto& prompt : Prompts(4, 999)) {
    auto pre = scout->Prefill(prompt).value();
    auto mapped = p->Apply(*pre.cache, *scout).value();
    const KvCache& a = *pre.cache;
    const size_t numel = static_cast<size_t>(a.kv_heads()) * a.size() * a.head_dim();
    std::vector<float> k0(numel), v0(numel), k1(numel), v1(numel);
    for (int l = 0; l < a.num_layers(); ++l) {
      ASSERT_TRUE(a.ExportLayer(l, 0, a.size(), k0.data(), v0.data()).ok());
      ASSERT_TRUE(mapped->ExportLayer(l, 0, a.size(), k1.data(), v1.data()).ok());
      float scale = 0, err = 0;
      for (size_t i = 0; i < numel; ++i) {
        scale = std::max({scale, std::abs(k0[i]), std::abs(v0[i])});
        err = std::max({err, std::abs(k1[i] - k0[i]), std::abs(v1[i] - v0[i])});
      }
      EXPECT_LT(err, 1e-3 * scale) << "layer " << l << ", values up to " << scale;
    }
    EXPECT_EQ(mapped->positions(), a.positions());
    EXPECT_EQ(mapped->next_position(), a.next_position());
  }
  EXPECT_EQ(Answers(*scout, *scout, p.get()), Answers(*scout, *scout, nullptr));
}

// A model computing the same function with other K and V coordinates: per kv head, values
// multiplied by a random invertible matrix (o_proj compensates) and keys rotated and
// scaled within each RoPE pair (the queries compensate), so attention is unchanged.
Weights Reparametrise(const ModelConfig& c, Weights w, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(static_cast<int64_t>(seed));
  const int64_t hd = c.head_dim, half = hd / 2, g = c.num_heads / c.num_kv_heads;
  for (LayerWeights& lw : w.layers) {
    for (int64_t h = 0; h < c.num_kv_heads; ++h) {
      const torch::Tensor m =
          torch::eye(hd) + 0.3 * torch::randn({hd, hd}) / std::sqrt(static_cast<double>(hd));
      const torch::Tensor angle = torch::rand({half}) * 6.28, scale = 0.5 + torch::rand({half});
      torch::Tensor t = torch::zeros({hd, hd}), u = torch::zeros({hd, hd});
      for (int64_t i = 0; i < half; ++i) {
        const double c0 = std::cos(angle[i].item<double>()), s0 = std::sin(angle[i].item<double>());
        const double k = scale[i].item<double>();
        t[i][i] = k * c0, t[i][i + half] = -k * s0, t[i + half][i] = k * s0,
        t[i + half][i + half] = k * c0;
        u[i][i] = c0 / k, u[i][i + half] = -s0 / k, u[i + half][i] = s0 / k,
        u[i + half][i + half] = c0 / k;
      }
      auto rows = [&](torch::Tensor& x, int64_t head, const torch::Tensor& by) {
        if (x.defined())
          x.narrow(0, head * hd, hd)
              .copy_(by.mm(x.narrow(0, head * hd, hd).view({hd, -1}))
                         .view_as(x.narrow(0, head * hd, hd)));
      };
      rows(lw.v_w, h, m);
      rows(lw.v_b, h, m);
      rows(lw.k_w, h, t);
      rows(lw.k_b, h, t);
      const torch::Tensor m_inv = torch::inverse(m);
      for (int64_t q = h * g; q < (h + 1) * g; ++q) {
        rows(lw.q_w, q, u);
        rows(lw.q_b, q, u);
        lw.o_w.narrow(1, q * hd, hd).copy_(lw.o_w.narrow(1, q * hd, hd).mm(m_inv));
      }
    }
  }
  return w;
}

TEST(Projection, RecoversAnExactReparametrisation) {
  auto scout = Model::Load(kScout).value();
  const ModelConfig c = ModelConfig::Load(absl::StrCat(kScout, "/config.json")).value();
  auto set = WeightSet::OpenDir(kScout).value();
  Weights w = LoadWeights(c, *set, torch::TensorOptions().dtype(torch::kFloat32)).value();
  const fs::path dir = TempDir("reparam");
  ASSERT_TRUE(
      SaveWeights(c, Reparametrise(c, std::move(w), 3), (dir / "model.safetensors").string()).ok());
  fs::copy_file(fs::path(kScout) / "config.json", dir / "config.json",
                fs::copy_options::overwrite_existing);
  fs::copy_file(fs::path(kScout) / "tokenizer.json", dir / "tokenizer.json",
                fs::copy_options::overwrite_existing);
  auto other = Model::Load(dir.string()).value();
  ASSERT_NE(other->fingerprint(), scout->fingerprint());
  // Same function: the re-parametrised model answers as the scout does from its own cache.
  const auto reference = Answers(*scout, *scout, nullptr);
  ASSERT_EQ(Answers(*other, *other, nullptr), reference);

  auto p = FitOn(*scout, *other, 16);
  ASSERT_NE(p, nullptr);
  for (size_t t = 0; t < p->header().layers.size(); ++t) {
    EXPECT_GE(p->header().layers[t].r2_k, 0.999) << "layer " << t;
    EXPECT_GE(p->header().layers[t].r2_v, 0.999) << "layer " << t;
  }
  EXPECT_EQ(Answers(*scout, *other, p.get()), reference);
}

// Keys are mapped before RoPE: a target that is the scout with another RoPE base has
// the same layer-0 keys before rotation (they come from the embeddings alone) but not
// after it. The fit must find layer 0's key map exact, and the mapped cache, compacted
// to scattered positions, must hold the target's own rotated keys at those positions.
TEST(Projection, KeysAreComparedBeforeRope) {
  ModelConfig c = ModelConfig::Load(absl::StrCat(kScout, "/config.json")).value();
  c.rope_theta = 1e4;
  const fs::path dir = TempDir("rope");
  std::ofstream(dir / "config.json") << c.ToJson();
  fs::copy_file(fs::path(kScout) / "model.safetensors", dir / "model.safetensors",
                fs::copy_options::overwrite_existing);
  fs::copy_file(fs::path(kScout) / "tokenizer.json", dir / "tokenizer.json",
                fs::copy_options::overwrite_existing);
  auto scout = Model::Load(kScout).value();
  auto other = Model::Load(dir.string()).value();
  auto p = FitOn(*scout, *other, 16);
  ASSERT_NE(p, nullptr);
  EXPECT_GT(p->header().layers[0].r2_k, 0.9999);
  EXPECT_GT(p->header().layers[0].r2_v, 0.9999);

  const std::vector<int32_t> prompt = Prompts(2, 4242)[0];
  auto src = scout->Prefill(prompt).value();
  auto own = other->Prefill(prompt).value();
  std::vector<int32_t> slots;
  for (int i = 0; i < src.cache->size(); i += 3) slots.push_back(i);
  auto kept = src.cache->Copy(slots).value();
  auto mapped = p->Apply(*kept, *other).value();
  ASSERT_EQ(mapped->positions(), kept->positions());
  const size_t row = static_cast<size_t>(c.head_dim);
  std::vector<float> k(c.num_kv_heads * row), v(k.size()), k_own(k.size()), v_own(k.size());
  float err = 0, scale = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    ASSERT_TRUE(
        mapped->ExportLayer(0, static_cast<int>(i), static_cast<int>(i) + 1, k.data(), v.data())
            .ok());
    ASSERT_TRUE(own.cache->ExportLayer(0, slots[i], slots[i] + 1, k_own.data(), v_own.data()).ok());
    for (size_t j = 0; j < k.size(); ++j) {
      err = std::max(err, std::abs(k[j] - k_own[j]));
      scale = std::max(scale, std::abs(k_own[j]));
    }
  }
  EXPECT_LT(err, 1e-3 * scale) << "layer-0 keys up to " << scale;
  fs::remove_all(dir);
}

class ProjectionFileTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scout_ = Model::Load(kScout).value().release();
    large_ = Model::Load(kLarge).value().release();
    auto p = FitOn(*scout_, *large_, 8);
    dir_ = new fs::path(TempDir("files"));
    ASSERT_TRUE(p->Save((*dir_ / "good.safetensors").string()).ok());
  }
  static void TearDownTestSuite() {
    delete scout_;
    delete large_;
    fs::remove_all(*dir_);
    delete dir_;
  }

  // Rewrites the good file with `edit` applied to its tensors and header JSON.
  static std::string Rewrite(
      const std::string& name,
      const std::function<void(std::vector<TensorToWrite>&, nlohmann::json&)>& edit) {
    auto file = SafetensorsFile::Open((*dir_ / "good.safetensors").string()).value();
    nlohmann::json header = nlohmann::json::parse(
        nlohmann::json::parse(file->header())["__metadata__"]["kvstream_projection"]
            .get<std::string>());
    std::vector<TensorToWrite> tensors;
    for (const auto& [n, view] : file->tensors()) {
      tensors.push_back({n, view.dtype, view.shape,
                         std::string(reinterpret_cast<const char*>(view.data), view.nbytes)});
    }
    edit(tensors, header);
    const std::string path = (*dir_ / name).string();
    EXPECT_TRUE(WriteSafetensors(path, tensors, {{"kvstream_projection", header.dump()}}).ok());
    return path;
  }

  static Model* scout_;
  static Model* large_;
  static fs::path* dir_;
};
Model* ProjectionFileTest::scout_ = nullptr;
Model* ProjectionFileTest::large_ = nullptr;
fs::path* ProjectionFileTest::dir_ = nullptr;

TEST_F(ProjectionFileTest, GoodFileLoadsAndChecksItsModels) {
  auto p = Projection::Load((*dir_ / "good.safetensors").string());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE((*p)->CheckTarget(*large_).ok());
  const absl::Status wrong_target = (*p)->CheckTarget(*scout_);
  EXPECT_EQ(wrong_target.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong_target.message().find("fingerprint"), std::string::npos) << wrong_target;
  const ModelConfig& c = scout_->config();
  EXPECT_TRUE(
      (*p)->CheckSource(scout_->fingerprint(), c.num_layers, c.num_kv_heads, c.head_dim).ok());
  EXPECT_EQ(
      (*p)->CheckSource(scout_->fingerprint(), c.num_layers, c.num_kv_heads + 1, c.head_dim).code(),
      absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      (*p)->CheckSource("qwen2-0000000000000000", c.num_layers, c.num_kv_heads, c.head_dim).code(),
      absl::StatusCode::kFailedPrecondition);
  // A cache of the wrong model is refused before anything is mapped.
  auto large_cache = large_->Prefill(std::vector<int32_t>{1, 2, 3}).value();
  EXPECT_EQ((*p)->Apply(*large_cache.cache, *large_).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ProjectionFileTest, MalformedFilesAreRefusedWithTheReason) {
  struct Case {
    std::string name, expect;
    std::function<void(std::vector<TensorToWrite>&, nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"nan", "NaN",
       [](auto& t, auto&) { reinterpret_cast<float*>(t[0].data.data())[5] = std::nanf(""); }},
      {"shape", "expected F32",
       [](auto& t, auto&) {
         t[1].shape[0] -= 1;
         t[1].data.resize(t[1].data.size() - 4 * t[1].shape[1]);
       }},
      {"missing", "missing", [](auto& t, auto&) { t.pop_back(); }},
      {"dims", "expected F32", [](auto&, auto& h) { h["source"]["head_dim"] = 12; }},
      {"map", "layer_map[0]",
       [](auto&, auto& h) { h["layer_map"][0] = nlohmann::json::array({9}); }},
      {"layers", "one entry per target layer", [](auto&, auto& h) { h["layers"].erase(0); }},
      {"type", "source.num_layers", [](auto&, auto& h) { h["source"]["num_layers"] = "four"; }},
      {"format", "format", [](auto&, auto& h) { h["format"] = 2; }},
  };
  for (const Case& c : cases) {
    auto p = Projection::Load(Rewrite(c.name + ".safetensors", c.edit));
    ASSERT_FALSE(p.ok()) << c.name;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name << ": " << p.status();
    EXPECT_NE(p.status().message().find(c.expect), std::string::npos)
        << c.name << ": " << p.status();
  }
  // Truncated, and a safetensors file that is no projection.
  const fs::path good = *dir_ / "good.safetensors", cut = *dir_ / "cut.safetensors";
  fs::copy_file(good, cut, fs::copy_options::overwrite_existing);
  fs::resize_file(cut, fs::file_size(good) - 100);
  EXPECT_FALSE(Projection::Load(cut.string()).ok());
  auto weights = Projection::Load(absl::StrCat(kScout, "/model.safetensors"));
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(weights.status().message().find("not a kvstream projection"), std::string::npos)
      << weights.status();
}

// Each committed projection serves its own model pair and refuses the other pair's
// models by fingerprint: the -2k pair shares the tokenizer and the shapes, so only the
// fingerprint tells a map fitted on one pair from the other's.
TEST(Projection, CommittedProjectionsServeTheirOwnPairOnly) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"testdata/models", "testdata/projections/scout_to_large.safetensors"},
      {"testdata/models-2k", "testdata/projections/scout_to_large_2k.safetensors"}};
  std::vector<std::unique_ptr<Model>> scouts, larges;
  for (const auto& [dir, file] : pairs) {
    scouts.push_back(Model::Load(dir + "/scout").value());
    larges.push_back(Model::Load(dir + "/large").value());
  }
  for (size_t i = 0; i < pairs.size(); ++i) {
    auto p = Projection::Load(pairs[i].second);
    ASSERT_TRUE(p.ok()) << p.status();
    for (size_t j = 0; j < pairs.size(); ++j) {
      const ModelConfig& c = scouts[j]->config();
      const absl::Status target = (*p)->CheckTarget(*larges[j]);
      const absl::Status source =
          (*p)->CheckSource(scouts[j]->fingerprint(), c.num_layers, c.num_kv_heads, c.head_dim);
      EXPECT_EQ(target.ok(), i == j)
          << pairs[i].second << " on " << pairs[j].first << ": " << target;
      EXPECT_EQ(source.ok(), i == j)
          << pairs[i].second << " on " << pairs[j].first << ": " << source;
    }
  }
}

TEST(Projection, RefusesModelsWithDifferentTokenizers) {
  const fs::path dir = TempDir("tokenizer");
  fs::copy_file(fs::path(kScout) / "config.json", dir / "config.json",
                fs::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer.json") << "{}";
  EXPECT_TRUE(CheckSameTokenizer(kScout, kLarge).ok());
  const absl::Status st = CheckSameTokenizer(kScout, dir.string());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("tokenizers differ"), std::string::npos) << st;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kvstream::model
