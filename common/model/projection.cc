#include "common/model/projection.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/status.h"
#include "common/model/kv_chunks.h"
#include "common/model/safetensors.h"
#include "common/model/transformer.h"

namespace kvstream::model {
namespace {

torch::Tensor PositionsTensor(const std::vector<int32_t>& positions) {
  return torch::tensor(std::vector<int64_t>(positions.begin(), positions.end()), torch::kInt64);
}

// Every layer of `cache` as float32 CPU tensors [kv_heads, slots, head_dim], keys
// un-rotated with RoPE base `theta` at each slot's original position.
absl::Status ExportUnroped(const KvCache& cache, double theta, std::vector<torch::Tensor>& k,
                           std::vector<torch::Tensor>& v) {
  const int64_t kvh = cache.kv_heads(), n = cache.size(), hd = cache.head_dim();
  auto [cos, sin] =
      RopeCosSin(PositionsTensor(cache.positions()), static_cast<int>(hd), theta, torch::kFloat32);
  k.clear();
  v.clear();
  for (int l = 0; l < cache.num_layers(); ++l) {
    torch::Tensor kl = torch::empty({kvh, n, hd}, torch::kFloat32);
    torch::Tensor vl = torch::empty({kvh, n, hd}, torch::kFloat32);
    RETURN_IF_ERROR(
        cache.ExportLayer(l, 0, static_cast<int>(n), kl.data_ptr<float>(), vl.data_ptr<float>()));
    k.push_back(ApplyRope(kl, cos, -sin));  // R(p)^T: the inverse rotation
    v.push_back(vl);
  }
  return absl::OkStatus();
}

// [slots, |layers| * kv_heads * head_dim]: the given layers' heads side by side per slot.
torch::Tensor Features(const std::vector<torch::Tensor>& per_layer,
                       const std::vector<int>& layers) {
  std::vector<torch::Tensor> parts;
  for (int l : layers) {
    const torch::Tensor& t = per_layer[l];  // [kvh, n, hd]
    parts.push_back(t.permute({1, 0, 2}).reshape({t.size(1), t.size(0) * t.size(2)}));
  }
  return torch::cat(parts, 1);
}

// Projections un-rotate and re-rotate keys with the plain RoPE of rope_theta.
absl::Status CheckPlainRope(const Model& m) {
  const RopeScaling& r = m.config().rope_scaling;
  if (r.type.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("model ", m.dir(), " scales RoPE (rope_scaling ", r.type,
                   "); projections support models with plain RoPE only"));
}

ProjectionModel FromModel(const Model& m) {
  const ModelConfig& c = m.config();
  return {m.fingerprint(), c.num_layers, c.num_kv_heads, c.head_dim, c.rope_theta};
}

// The inputs of one map: the source layers' own tensor (K for the key map, V for the value
// map), or with joint inputs both, keys first.
torch::Tensor MapInputs(bool joint, const std::vector<torch::Tensor>& own,
                        const std::vector<torch::Tensor>& k, const std::vector<torch::Tensor>& v,
                        const std::vector<int>& layers) {
  if (!joint) return Features(own, layers);
  return torch::cat({Features(k, layers), Features(v, layers)}, 1);
}

}  // namespace

// ---- Projection ---------------------------------------------------------------------

struct Projection::Maps {
  std::vector<torch::Tensor> k, v;  // [target layer] -> float32 [d_in + 1, d_out]
};

Projection::Projection() : maps_(std::make_unique<Maps>()) {}
Projection::~Projection() = default;

absl::StatusOr<std::unique_ptr<Projection>> Projection::Load(const std::string& path) {
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  std::unique_ptr<Projection> p(new Projection());
  p->path_ = path;
  absl::StatusOr<ProjectionHeader> header = ReadProjectionHeader(file->header(), file->tensors());
  if (!header.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", header.status().message()));
  }
  p->header_ = std::move(*header);
  const ProjectionHeader& h = p->header_;
  const int64_t d_out = static_cast<int64_t>(h.target.num_kv_heads) * h.target.head_dim;
  for (int t = 0; t < h.target.num_layers; ++t) {
    for (const char* kind : {"k", "v"}) {
      // Present, F32 and of this shape: ReadProjectionHeader checked.
      const std::string name = absl::StrCat("layers.", t, ".", kind);
      const TensorView* view = file->Find(name);
      const std::vector<int64_t> want = {ProjectionInputDim(h, t) + 1, d_out};
      torch::Tensor m =
          torch::from_blob(const_cast<uint8_t*>(view->data), want, torch::kFloat32).clone();
      if (!torch::isfinite(m).all().item<bool>()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor ", name, " holds NaN or infinite entries"));
      }
      (kind[0] == 'k' ? p->maps_->k : p->maps_->v).push_back(m);
    }
  }
  return p;
}

absl::Status Projection::CheckTarget(const Model& target) const {
  RETURN_IF_ERROR(CheckPlainRope(target));
  const ProjectionModel want = header_.target, have = FromModel(target);
  auto differ = [&](const char* field, const std::string& a, const std::string& b) {
    return absl::FailedPreconditionError(absl::StrCat("projection ", path_,
                                                      " was fitted for a target with ", field, " ",
                                                      a, "; model ", target.dir(), " has ", b));
  };
  if (want.fingerprint != have.fingerprint)
    return differ("fingerprint", want.fingerprint, have.fingerprint);
  if (want.num_layers != have.num_layers)
    return differ("num_layers", absl::StrCat(want.num_layers), absl::StrCat(have.num_layers));
  if (want.num_kv_heads != have.num_kv_heads) {
    return differ("num_kv_heads", absl::StrCat(want.num_kv_heads), absl::StrCat(have.num_kv_heads));
  }
  if (want.head_dim != have.head_dim)
    return differ("head_dim", absl::StrCat(want.head_dim), absl::StrCat(have.head_dim));
  if (want.rope_theta != have.rope_theta) {
    return differ("rope_theta", absl::StrCat(want.rope_theta), absl::StrCat(have.rope_theta));
  }
  return absl::OkStatus();
}

absl::Status Projection::CheckSource(const std::string& fingerprint, int num_layers, int kv_heads,
                                     int head_dim) const {
  const ProjectionModel& s = header_.source;
  if (fingerprint != s.fingerprint || num_layers != s.num_layers || kv_heads != s.num_kv_heads ||
      head_dim != s.head_dim) {
    return absl::FailedPreconditionError(absl::StrCat(
        "projection ", path_, " maps from ", s.fingerprint, " (", s.num_layers, " layers x ",
        s.num_kv_heads, " kv heads x ", s.head_dim, "); the sender's cache is ", fingerprint, " (",
        num_layers, " x ", kv_heads, " x ", head_dim, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvCache>> Projection::Apply(const KvCache& source,
                                                           const Model& target) const {
  RETURN_IF_ERROR(CheckSource(header_.source.fingerprint, source.num_layers(), source.kv_heads(),
                              source.head_dim()));
  RETURN_IF_ERROR(CheckTarget(target));
  const ProjectionModel& tm = header_.target;
  auto out = target.NewCache(source.positions(), source.next_position());
  RETURN_IF_ERROR(Guard("projection", [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> k, v;
    RETURN_IF_ERROR(ExportUnroped(source, header_.source.rope_theta, k, v));
    const int64_t n = source.size();
    auto [cos, sin] = RopeCosSin(PositionsTensor(source.positions()), tm.head_dim, tm.rope_theta,
                                 torch::kFloat32);
    auto map = [&](const torch::Tensor& w,
                   const torch::Tensor& x) {  // [n, d_in] -> [kvh_t, n, hd_t]
      const int64_t d = x.size(1);
      const torch::Tensor y = torch::addmm(w[d], x, w.narrow(0, 0, d));
      return y.view({n, tm.num_kv_heads, tm.head_dim}).permute({1, 0, 2});
    };
    for (int t = 0; t < tm.num_layers; ++t) {
      const std::vector<int>& from = header_.layers[t].source_layers;
      const bool joint = header_.joint_inputs;
      const torch::Tensor kt =
          ApplyRope(map(maps_->k[t], MapInputs(joint, k, k, v, from)), cos, sin).contiguous();
      const torch::Tensor vt = map(maps_->v[t], MapInputs(joint, v, k, v, from)).contiguous();
      RETURN_IF_ERROR(
          out->WriteLayer(t, 0, static_cast<int>(n), kt.data_ptr<float>(), vt.data_ptr<float>()));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::Status Projection::Save(const std::string& path) const {
  std::vector<TensorToWrite> tensors;
  for (int t = 0; t < header_.target.num_layers; ++t) {
    for (const char* kind : {"k", "v"}) {
      const torch::Tensor m =
          (kind[0] == 'k' ? maps_->k : maps_->v)[t].to(torch::kFloat32).contiguous();
      TensorToWrite w;
      w.name = absl::StrCat("layers.", t, ".", kind);
      w.shape = {m.size(0), m.size(1)};
      w.data.assign(reinterpret_cast<const char*>(m.data_ptr<float>()), m.numel() * sizeof(float));
      tensors.push_back(std::move(w));
    }
  }
  return WriteSafetensors(path, tensors, {{kProjectionMetadataKey, ProjectionHeaderJson(header_)}});
}

// ---- Fitting --------------------------------------------------------------------------

absl::StatusOr<std::vector<std::vector<int>>> ProjectionLayerMap(const std::string& kind,
                                                                 int source_layers,
                                                                 int target_layers) {
  if (source_layers < 1 || target_layers < 1)
    return absl::InvalidArgumentError("models need at least one layer");
  std::vector<std::vector<int>> map(target_layers);
  for (int t = 0; t < target_layers; ++t) {
    if (kind == "all") {
      for (int l = 0; l < source_layers; ++l) map[t].push_back(l);
    } else if (kind == "bracket") {
      // Exact arithmetic on integers: depth t (Ls - 1) / (Lt - 1).
      const int num = t * (source_layers - 1), den = std::max(1, target_layers - 1);
      map[t].push_back(num / den);
      if (num % den != 0) map[t].push_back(num / den + 1);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("layer map: expected bracket or all, found '", kind, "'"));
    }
  }
  return map;
}

absl::Status CheckSameTokenizer(const std::string& source_dir, const std::string& target_dir) {
  auto read = [](const std::string& path) -> absl::StatusOr<std::string> {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  ASSIGN_OR_RETURN(const std::string a, read(source_dir + "/tokenizer.json"));
  ASSIGN_OR_RETURN(const std::string b, read(target_dir + "/tokenizer.json"));
  if (a != b) {
    return absl::InvalidArgumentError(absl::StrCat("source and target tokenizers differ (",
                                                   source_dir, " vs ", target_dir,
                                                   "): a position would not mean the same text"));
  }
  return absl::OkStatus();
}

// Second moments in float64 of one target layer's K or V fit: inputs with a trailing
// constant 1 (so the last row / column carries sums), and targets.
struct ProjectionFitter::Moments {
  struct Pair {
    torch::Tensor xtx, xty, yty;  // [d+1, d+1], [d+1, d_out], [d_out, d_out]
    void Add(const torch::Tensor& x, const torch::Tensor& y) {
      const torch::Tensor xa =
          torch::cat({x.to(torch::kFloat64), torch::ones({x.size(0), 1}, torch::kFloat64)}, 1);
      const torch::Tensor yd = y.to(torch::kFloat64);
      if (!xtx.defined()) {
        xtx = torch::zeros({xa.size(1), xa.size(1)}, torch::kFloat64);
        xty = torch::zeros({xa.size(1), yd.size(1)}, torch::kFloat64);
        yty = torch::zeros({yd.size(1), yd.size(1)}, torch::kFloat64);
      }
      xtx.add_(xa.t().mm(xa));
      xty.add_(xa.t().mm(yd));
      yty.add_(yd.t().mm(yd));
    }
  };
  Pair k, v;
};

absl::StatusOr<std::unique_ptr<ProjectionFitter>> ProjectionFitter::Create(
    Model& source, Model& target, const FitOptions& options) {
  std::unique_ptr<ProjectionFitter> f(new ProjectionFitter());
  f->source_ = &source;
  f->target_ = &target;
  f->options_ = options;
  if (options.ridge_grid.empty()) return absl::InvalidArgumentError("ridge grid is empty");
  RETURN_IF_ERROR(CheckPlainRope(source));
  RETURN_IF_ERROR(CheckPlainRope(target));
  if (source.config().head_dim % 2 != 0 || target.config().head_dim % 2 != 0) {
    return absl::InvalidArgumentError("RoPE needs an even head_dim on both models");
  }
  for (const std::string& spec : options.input_specs) {
    ASSIGN_OR_RETURN(codec::Plan plan, codec::ParsePlan(spec));
    RETURN_IF_ERROR(plan.Validate(source.config().num_layers));
    f->input_plans_.push_back(plan);
  }
  ASSIGN_OR_RETURN(f->layer_map_, ProjectionLayerMap(options.layer_map, source.config().num_layers,
                                                     target.config().num_layers));
  for (int t = 0; t < target.config().num_layers; ++t) {
    f->train_.push_back(std::make_unique<Moments>());
    f->held_.push_back(std::make_unique<Moments>());
  }
  return f;
}

ProjectionFitter::~ProjectionFitter() = default;

absl::StatusOr<std::unique_ptr<KvCache>> ProjectionFitter::ThroughCodec(
    std::unique_ptr<KvCache> cache) {
  const std::vector<codec::Plan>& plans = input_plans_;
  if (plans.empty()) return cache;
  const codec::Plan& plan = plans[(prompts_ + held_prompts_) % plans.size()];
  if (plan.base.k.lossless() && plan.base.v.lossless() && plan.overrides.empty()) return cache;
  ASSIGN_OR_RETURN(auto chunks, EncodeCache(*cache, plan, "fit", {}));
  CacheAssembler assembler(*source_, "fit", cache->positions(), cache->next_position());
  for (const auto& c : chunks) RETURN_IF_ERROR(assembler.Add(c));
  return assembler.Finish();
}

absl::Status ProjectionFitter::AddPrompt(absl::Span<const int32_t> tokens, bool held_out) {
  ASSIGN_OR_RETURN(PrefillResult src, source_->Prefill(tokens));
  ASSIGN_OR_RETURN(PrefillResult tgt, target_->Prefill(tokens));
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> sent, ThroughCodec(std::move(src.cache)));
  return Guard("projection fit", [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> sk, sv, tk, tv;
    RETURN_IF_ERROR(ExportUnroped(*sent, source_->config().rope_theta, sk, sv));
    RETURN_IF_ERROR(ExportUnroped(*tgt.cache, target_->config().rope_theta, tk, tv));
    auto& moments = held_out ? held_ : train_;
    for (size_t t = 0; t < layer_map_.size(); ++t) {
      const std::vector<int> self = {static_cast<int>(t)};
      const bool joint = options_.joint_inputs;
      moments[t]->k.Add(MapInputs(joint, sk, sk, sv, layer_map_[t]), Features(tk, self));
      moments[t]->v.Add(MapInputs(joint, sv, sk, sv, layer_map_[t]), Features(tv, self));
    }
    (held_out ? held_prompts_ : prompts_)++;
    positions_ += static_cast<int64_t>(tokens.size());
    return absl::OkStatus();
  });
}

namespace {

struct Solved {
  torch::Tensor w;  // [d+1, d_out] float64
  double ridge = 0, r2 = 0, cka = 0;
};

// Held-out sum of squared errors of `w`, from the held-out moments.
double HeldOutSse(const torch::Tensor& w, const torch::Tensor& xtx, const torch::Tensor& xty,
                  const torch::Tensor& yty) {
  return (yty.trace() - 2 * (w * xty).sum() + (w * xtx.mm(w)).sum()).item<double>();
}

// Ridge over the grid, chosen by held-out error; R^2 and linear CKA on the held-out set.
Solved SolveRidge(const torch::Tensor& xtx, const torch::Tensor& xty, const torch::Tensor& hxtx,
                  const torch::Tensor& hxty, const torch::Tensor& hyty,
                  const std::vector<double>& grid) {
  const int64_t d = xtx.size(0) - 1;
  torch::Tensor penalty = torch::ones({d + 1}, torch::kFloat64);
  penalty[d] = 0;  // the bias is not shrunk
  const double scale = std::max(1e-30, xtx.diagonal().narrow(0, 0, d).mean().item<double>());
  Solved best;
  double best_sse = std::numeric_limits<double>::infinity();
  for (double rel : grid) {
    const torch::Tensor a = xtx + torch::diag(penalty * (rel * scale));
    const torch::Tensor w = torch::linalg_solve(a, xty);
    const double sse = HeldOutSse(w, hxtx, hxty, hyty);
    if (std::isfinite(sse) && sse < best_sse) {
      best_sse = sse;
      best.w = w;
      best.ridge = rel * scale;
    }
  }
  const double n = hxtx[d][d].item<double>();
  const torch::Tensor mx = hxtx[d].narrow(0, 0, d) / n, my = hxty[d] / n;
  const double sst = (hyty.trace() - n * my.dot(my)).item<double>();
  best.r2 = sst > 0 ? 1 - best_sse / sst : 0;
  const torch::Tensor sxx = hxtx.narrow(0, 0, d).narrow(1, 0, d) - n * torch::outer(mx, mx);
  const torch::Tensor syy = hyty - n * torch::outer(my, my);
  const torch::Tensor sxy = hxty.narrow(0, 0, d) - n * torch::outer(mx, my);
  const double denom = (sxx.norm() * syy.norm()).item<double>();
  best.cka = denom > 0 ? sxy.pow(2).sum().item<double>() / denom : 0;
  return best;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Projection>> ProjectionFitter::Fit() {
  if (prompts_ == 0 || held_prompts_ == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "fitting needs training and held-out prompts; have ", prompts_, " and ", held_prompts_));
  }
  std::unique_ptr<Projection> p(new Projection());
  ProjectionHeader& h = p->header_;
  h.source = FromModel(*source_);
  h.target = FromModel(*target_);
  h.calibration_prompts = prompts_;
  h.held_out_prompts = held_prompts_;
  h.calibration_positions = positions_;
  h.calibration = options_.calibration;
  h.joint_inputs = options_.joint_inputs;
  RETURN_IF_ERROR(Guard("projection solve", [&]() -> absl::Status {
    for (size_t t = 0; t < layer_map_.size(); ++t) {
      ProjectionLayer layer;
      layer.source_layers = layer_map_[t];
      const Moments::Pair &tk = train_[t]->k, &tv = train_[t]->v, &hk = held_[t]->k,
                          &hv = held_[t]->v;
      const Solved k = SolveRidge(tk.xtx, tk.xty, hk.xtx, hk.xty, hk.yty, options_.ridge_grid);
      const Solved v = SolveRidge(tv.xtx, tv.xty, hv.xtx, hv.xty, hv.yty, options_.ridge_grid);
      if (!k.w.defined() || !v.w.defined()) {
        return absl::InternalError(
            absl::StrCat("layer ", t, ": no ridge strength gave a finite held-out error"));
      }
      layer.ridge_k = k.ridge;
      layer.ridge_v = v.ridge;
      layer.r2_k = k.r2;
      layer.r2_v = v.r2;
      layer.cka_k = k.cka;
      layer.cka_v = v.cka;
      h.layers.push_back(layer);
      p->maps_->k.push_back(k.w.to(torch::kFloat32));
      p->maps_->v.push_back(v.w.to(torch::kFloat32));
    }
    return absl::OkStatus();
  }));
  return p;
}

}  // namespace kvstream::model
