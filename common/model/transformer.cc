#include "common/model/transformer.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"

namespace kvstream::model {
namespace {

torch::ScalarType TorchType(StDType d) {
  switch (d) {
    case StDType::kF32:
      return torch::kFloat32;
    case StDType::kF16:
      return torch::kFloat16;
    case StDType::kBF16:
      return torch::kBFloat16;
  }
  return torch::kFloat32;
}

// The tensor `name`, shape-checked. With `in_place` (the set itself, kept alive by every
// tensor that refers to it), a tensor already in the wanted dtype on the CPU is the
// mapped file's bytes, not a copy; anything else is copied out, converting dtype and
// device.
absl::StatusOr<torch::Tensor> Fetch(const WeightSet& set, const std::string& name,
                                    std::vector<int64_t> shape, const torch::TensorOptions& opt,
                                    const std::shared_ptr<const WeightSet>& in_place) {
  ASSIGN_OR_RETURN(const TensorView* v, set.Get(name, shape));
  const auto type = TorchType(v->dtype);
  const bool aligned = reinterpret_cast<uintptr_t>(v->data) % StDTypeBytes(v->dtype) == 0;
  if (in_place != nullptr && aligned && opt.device().is_cpu() &&
      opt.dtype() == torch::scalarTypeToTypeMeta(type)) {
    return torch::from_blob(
        const_cast<uint8_t*>(v->data), v->shape, [keep = in_place](void*) {},
        torch::TensorOptions().dtype(type));
  }
  torch::Tensor t =
      torch::from_blob(const_cast<uint8_t*>(v->data), v->shape, torch::TensorOptions().dtype(type));
  return t.to(opt, /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace

std::vector<torch::Tensor> Weights::Parameters() const {
  std::vector<torch::Tensor> out = {embed, norm};
  for (const LayerWeights& l : layers) {
    for (const torch::Tensor& t : {l.input_norm, l.q_w, l.q_b, l.k_w, l.k_b, l.v_w, l.v_b, l.o_w,
                                   l.post_norm, l.gate, l.up, l.down, l.q_norm, l.k_norm}) {
      if (t.defined()) out.push_back(t);
    }
  }
  if (!lm_head.is_same(embed)) out.push_back(lm_head);
  return out;
}

absl::StatusOr<Weights> LoadWeights(const ModelConfig& c, const WeightSet& set,
                                    const torch::TensorOptions& opt,
                                    std::shared_ptr<const WeightSet> in_place) {
  Weights w;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t QD = int64_t{c.num_heads} * c.head_dim, KD = int64_t{c.num_kv_heads} * c.head_dim;
  ASSIGN_OR_RETURN(w.embed, Fetch(set, "model.embed_tokens.weight", {V, H}, opt, in_place));
  ASSIGN_OR_RETURN(w.norm, Fetch(set, "model.norm.weight", {H}, opt, in_place));
  if (c.tie_word_embeddings || !set.Has("lm_head.weight")) {
    if (!c.tie_word_embeddings) {
      return absl::NotFoundError(
          "tensor lm_head.weight is missing and tie_word_embeddings is false");
    }
    w.lm_head = w.embed;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, Fetch(set, "lm_head.weight", {V, H}, opt, in_place));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    LayerWeights lw;
    ASSIGN_OR_RETURN(lw.input_norm, Fetch(set, p + "input_layernorm.weight", {H}, opt, in_place));
    ASSIGN_OR_RETURN(lw.post_norm,
                     Fetch(set, p + "post_attention_layernorm.weight", {H}, opt, in_place));
    ASSIGN_OR_RETURN(lw.q_w, Fetch(set, p + "self_attn.q_proj.weight", {QD, H}, opt, in_place));
    ASSIGN_OR_RETURN(lw.k_w, Fetch(set, p + "self_attn.k_proj.weight", {KD, H}, opt, in_place));
    ASSIGN_OR_RETURN(lw.v_w, Fetch(set, p + "self_attn.v_proj.weight", {KD, H}, opt, in_place));
    ASSIGN_OR_RETURN(lw.o_w, Fetch(set, p + "self_attn.o_proj.weight", {H, QD}, opt, in_place));
    if (set.Has(p + "self_attn.q_proj.bias")) {
      ASSIGN_OR_RETURN(lw.q_b, Fetch(set, p + "self_attn.q_proj.bias", {QD}, opt, in_place));
      ASSIGN_OR_RETURN(lw.k_b, Fetch(set, p + "self_attn.k_proj.bias", {KD}, opt, in_place));
      ASSIGN_OR_RETURN(lw.v_b, Fetch(set, p + "self_attn.v_proj.bias", {KD}, opt, in_place));
    }
    if (c.qk_norm) {
      const int64_t D = c.head_dim;
      ASSIGN_OR_RETURN(lw.q_norm, Fetch(set, p + "self_attn.q_norm.weight", {D}, opt, in_place));
      ASSIGN_OR_RETURN(lw.k_norm, Fetch(set, p + "self_attn.k_norm.weight", {D}, opt, in_place));
    }
    ASSIGN_OR_RETURN(lw.gate, Fetch(set, p + "mlp.gate_proj.weight", {I, H}, opt, in_place));
    ASSIGN_OR_RETURN(lw.up, Fetch(set, p + "mlp.up_proj.weight", {I, H}, opt, in_place));
    ASSIGN_OR_RETURN(lw.down, Fetch(set, p + "mlp.down_proj.weight", {H, I}, opt, in_place));
    w.layers.push_back(std::move(lw));
  }
  return w;
}

Weights InitWeights(const ModelConfig& c, uint64_t seed, double std, bool attention_bias) {
  torch::manual_seed(seed);
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t QD = int64_t{c.num_heads} * c.head_dim, KD = int64_t{c.num_kv_heads} * c.head_dim;
  auto normal = [&](std::vector<int64_t> shape) { return torch::randn(shape) * std; };
  Weights w;
  w.embed = normal({V, H});
  w.norm = torch::ones({H});
  w.lm_head = c.tie_word_embeddings ? w.embed : normal({V, H});
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights lw;
    lw.input_norm = torch::ones({H});
    lw.post_norm = torch::ones({H});
    lw.q_w = normal({QD, H});
    lw.k_w = normal({KD, H});
    lw.v_w = normal({KD, H});
    lw.o_w = normal({H, QD});
    if (attention_bias) {
      lw.q_b = torch::zeros({QD});
      lw.k_b = torch::zeros({KD});
      lw.v_b = torch::zeros({KD});
    }
    lw.gate = normal({I, H});
    lw.up = normal({I, H});
    lw.down = normal({H, I});
    if (c.qk_norm) {
      lw.q_norm = torch::ones({c.head_dim});
      lw.k_norm = torch::ones({c.head_dim});
    }
    w.layers.push_back(std::move(lw));
  }
  return w;
}

absl::StatusOr<Weights> GrowWeights(const ModelConfig& s, const Weights& w, const ModelConfig& b,
                                    double noise, uint64_t seed) {
  auto need = [](bool ok, const char* what, int64_t expected, int64_t found) {
    return ok ? absl::OkStatus()
              : absl::InvalidArgumentError(
                    absl::StrCat("cannot grow: ", what, " must be ", expected, ", found ", found));
  };
  RETURN_IF_ERROR(
      need(b.hidden_size == 2 * s.hidden_size, "hidden_size", 2 * s.hidden_size, b.hidden_size));
  RETURN_IF_ERROR(
      need(b.num_heads == 2 * s.num_heads, "num_attention_heads", 2 * s.num_heads, b.num_heads));
  RETURN_IF_ERROR(need(b.num_kv_heads == 2 * s.num_kv_heads, "num_key_value_heads",
                       2 * s.num_kv_heads, b.num_kv_heads));
  RETURN_IF_ERROR(need(b.head_dim == s.head_dim, "head_dim", s.head_dim, b.head_dim));
  RETURN_IF_ERROR(need(b.intermediate_size == 2 * s.intermediate_size, "intermediate_size",
                       2 * s.intermediate_size, b.intermediate_size));
  RETURN_IF_ERROR(
      need(b.num_layers >= s.num_layers, "num_hidden_layers at least", s.num_layers, b.num_layers));
  RETURN_IF_ERROR(need(b.vocab_size == s.vocab_size, "vocab_size", s.vocab_size, b.vocab_size));
  RETURN_IF_ERROR(need(b.tie_word_embeddings == s.tie_word_embeddings, "tie_word_embeddings",
                       s.tie_word_embeddings, b.tie_word_embeddings));
  if (b.rope_theta != s.rope_theta) {  // the same function needs the same rotations
    return absl::InvalidArgumentError(
        absl::StrCat("cannot grow: rope_theta must be ", s.rope_theta, ", found ", b.rope_theta));
  }
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  auto jitter = [&](torch::Tensor t) {
    return noise > 0 ? t + torch::randn(t.sizes()) * noise : t;
  };
  auto f32 = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat32); };
  // Rows are output units (duplicated); columns read the duplicated hidden state (halved).
  auto grow = [&](const torch::Tensor& m) {
    const torch::Tensor half = f32(m) / 2;
    const torch::Tensor row = torch::cat({half, half}, 1);
    return jitter(torch::cat({row, row}, 0)).contiguous();
  };
  auto twice = [&](const torch::Tensor& v) {
    return v.defined() ? torch::cat({f32(v), f32(v)}, 0).contiguous() : torch::Tensor();
  };
  Weights out;
  // Duplicated residual stream [x, x]: same RMS, so the norms keep their weights; the
  // final norm halves them because the head sums both copies.
  out.embed = jitter(torch::cat({f32(w.embed), f32(w.embed)}, 1)).contiguous();
  out.norm = twice(w.norm) / 2;
  out.lm_head = b.tie_word_embeddings
                    ? out.embed
                    : jitter(torch::cat({f32(w.lm_head), f32(w.lm_head)}, 1)).contiguous();
  for (const LayerWeights& l : w.layers) {
    LayerWeights g;
    g.input_norm = twice(l.input_norm);
    g.post_norm = twice(l.post_norm);
    // Heads are contiguous row blocks: doubling the rows gives heads [0..n-1, 0..n-1] and
    // kv heads likewise, so query head j of the grown model still reads (a copy of) the
    // kv head it read before: j / g = n_kv + (j - n) / g for the copies j >= n.
    g.q_w = grow(l.q_w);
    g.k_w = grow(l.k_w);
    g.v_w = grow(l.v_w);
    g.q_b = twice(l.q_b);
    g.k_b = twice(l.k_b);
    g.v_b = twice(l.v_b);
    g.o_w = grow(l.o_w);
    g.gate = grow(l.gate);
    g.up = grow(l.up);
    g.down = grow(l.down);
    out.layers.push_back(std::move(g));
  }
  const Weights fresh =
      InitWeights(b, seed + 1, 0.02, w.layers.empty() || w.layers[0].q_b.defined());
  for (int i = s.num_layers; i < b.num_layers; ++i) {
    LayerWeights l = fresh.layers[static_cast<size_t>(i)];
    l.o_w = torch::zeros_like(l.o_w);
    l.down = torch::zeros_like(l.down);
    out.layers.push_back(std::move(l));
  }
  return out;
}

absl::Status PlantOffsetHeads(const ModelConfig& c, Weights& w, const std::vector<int>& offsets,
                              double amplitude) {
  if (offsets.empty()) return absl::OkStatus();
  if (static_cast<int>(offsets.size()) > c.num_heads) {
    return absl::InvalidArgumentError(absl::StrCat("offset heads: expected at most ", c.num_heads,
                                                   " offsets (the query heads of layer 0), found ",
                                                   offsets.size()));
  }
  if (w.layers.empty() || !w.layers[0].q_b.defined() || !w.layers[0].k_b.defined()) {
    return absl::InvalidArgumentError("offset heads: expected a model with q/k biases, found none");
  }
  for (int o : offsets) {
    if (o < 1)
      return absl::InvalidArgumentError(
          absl::StrCat("offset heads: expected offsets of at least 1, found ", o));
  }
  const int hd = c.head_dim, half = hd / 2, pairs = std::min(4, half),
            g = c.num_heads / c.num_kv_heads;
  torch::NoGradGuard no_grad;
  LayerWeights& l = w.layers[0];
  for (size_t i = 0; i < offsets.size(); ++i) {
    const int64_t q = static_cast<int64_t>(i) * hd, k = static_cast<int64_t>(i) / g * hd;
    for (int p = 0; p < pairs; ++p) {
      // RoPE rotates pair (p, p + half) by position * theta_p: q rotated back by
      // offset * theta_p meets k at position - offset.
      const double theta = 1.0 / std::pow(c.rope_theta, 2.0 * p / hd);
      l.k_b[k + p] = amplitude;
      l.k_b[k + p + half] = 0.0;
      l.q_b[q + p] = amplitude * std::cos(offsets[i] * theta);
      l.q_b[q + p + half] = -amplitude * std::sin(offsets[i] * theta);
    }
  }
  return absl::OkStatus();
}

absl::Status PlantRecallCircuit(const ModelConfig& c, Weights& w, int key_offset,
                                const std::vector<int>& query_offsets, uint64_t seed,
                                double out_scale, double match_scale) {
  const int g = c.num_heads / c.num_kv_heads;
  const int nq = static_cast<int>(query_offsets.size());
  if (c.num_layers < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("recall circuit: expected a model of 2 or more layers, found ", c.num_layers));
  }
  if (nq < 1 || nq > g) {
    return absl::InvalidArgumentError(
        absl::StrCat("recall circuit: expected 1 to ", g,
                     " query offsets (the query heads of kv head 0), found ", nq));
  }
  if (c.head_dim < 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("recall circuit: expected a head_dim of at least 20, found ", c.head_dim));
  }
  if (c.hidden_size < c.head_dim * (1 + nq)) {  // room for one subspace per planted head
    return absl::InvalidArgumentError(
        absl::StrCat("recall circuit: expected a hidden_size of at least ", c.head_dim * (1 + nq),
                     ", found ", c.hidden_size));
  }
  std::vector<int> offsets = {key_offset};
  offsets.insert(offsets.end(), query_offsets.begin(), query_offsets.end());
  RETURN_IF_ERROR(PlantOffsetHeads(c, w, offsets));
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  const int64_t hd = c.head_dim, d = c.hidden_size, half = hd / 2, slow = 6;
  // Mutually orthogonal subspaces of the residual: where the key head and each query head write.
  const torch::Tensor basis = std::get<0>(torch::linalg_qr(torch::randn({d, hd * (1 + nq)})));
  const torch::Tensor vrows = std::get<0>(torch::linalg_qr(torch::randn({d, hd}))).t();  // [hd, d]
  // The slowly rotating RoPE pairs carry the match: rows (half - slow .. half) and their partners.
  const torch::Tensor proj =
      std::get<0>(torch::linalg_qr(torch::randn({hd, 2 * slow}))).t();  // [2 slow, hd]
  LayerWeights& l0 = w.layers[0];
  LayerWeights& l1 = w.layers[1];
  for (int i = 0; i <= nq; ++i) {
    const int64_t kv = i / g;
    l0.v_w.slice(0, kv * hd, (kv + 1) * hd).copy_(vrows);
    if (l0.v_b.defined()) l0.v_b.slice(0, kv * hd, (kv + 1) * hd).zero_();
    l0.o_w.slice(1, i * hd, (i + 1) * hd).copy_(out_scale * basis.slice(1, i * hd, (i + 1) * hd));
  }
  auto place = [&](torch::Tensor rows, const torch::Tensor& sub) {  // rows: [hd, d]; sub: [d, hd]
    rows.zero_();
    const torch::Tensor m = match_scale * torch::matmul(proj, sub.t());  // [2 slow, d]
    rows.slice(0, half - slow, half).copy_(m.slice(0, 0, slow));
    rows.slice(0, hd - slow, hd).copy_(m.slice(0, slow, 2 * slow));
  };
  place(l1.k_w.slice(0, 0, hd), basis.slice(1, 0, hd));
  if (l1.k_b.defined()) l1.k_b.slice(0, 0, hd).zero_();
  for (int j = 0; j < nq; ++j) {
    place(l1.q_w.slice(0, j * hd, (j + 1) * hd), basis.slice(1, (1 + j) * hd, (2 + j) * hd));
    if (l1.q_b.defined()) l1.q_b.slice(0, j * hd, (j + 1) * hd).zero_();
  }
  return absl::OkStatus();
}

absl::Status SaveWeights(const ModelConfig& c, const Weights& w, const std::string& path) {
  std::vector<TensorToWrite> out;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    if (!t.defined()) return;
    torch::Tensor f = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    TensorToWrite tw;
    tw.name = name;
    tw.shape = f.sizes().vec();
    tw.data.assign(static_cast<const char*>(f.data_ptr()), f.numel() * sizeof(float));
    out.push_back(std::move(tw));
  };
  add("model.embed_tokens.weight", w.embed);
  add("model.norm.weight", w.norm);
  if (!c.tie_word_embeddings) add("lm_head.weight", w.lm_head);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", lw.input_norm);
    add(p + "post_attention_layernorm.weight", lw.post_norm);
    add(p + "self_attn.q_proj.weight", lw.q_w);
    add(p + "self_attn.q_proj.bias", lw.q_b);
    add(p + "self_attn.k_proj.weight", lw.k_w);
    add(p + "self_attn.k_proj.bias", lw.k_b);
    add(p + "self_attn.v_proj.weight", lw.v_w);
    add(p + "self_attn.v_proj.bias", lw.v_b);
    add(p + "self_attn.o_proj.weight", lw.o_w);
    add(p + "self_attn.q_norm.weight", lw.q_norm);
    add(p + "self_attn.k_norm.weight", lw.k_norm);
    add(p + "mlp.gate_proj.weight", lw.gate);
    add(p + "mlp.up_proj.weight", lw.up);
    add(p + "mlp.down_proj.weight", lw.down);
  }
  return WriteSafetensors(path, out, {{"format", "pt"}});
}

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const torch::Tensor xf = x.to(torch::kFloat32);
  const torch::Tensor y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * y.to(x.scalar_type());
}

std::pair<torch::Tensor, torch::Tensor> RopeCosSin(const torch::Tensor& positions, int head_dim,
                                                   double theta, torch::ScalarType dtype) {
  // As HF: inv_freq = 1 / theta^(arange(0, d, 2) / d) in float32.
  const auto dev = positions.device();
  const torch::Tensor idx =
      torch::arange(0, head_dim, 2, torch::TensorOptions().dtype(torch::kInt64).device(dev))
          .to(torch::kFloat32);
  const torch::Tensor inv_freq = 1.0 / torch::pow(theta, idx / static_cast<double>(head_dim));
  const torch::Tensor freqs = torch::outer(positions.to(torch::kFloat32), inv_freq);
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

namespace {

// llama3: wavelengths longer than original / low_freq_factor are divided by `factor`,
// shorter than original / high_freq_factor kept, the band between blended.
torch::Tensor Llama3InvFreq(const torch::Tensor& inv_freq, const RopeScaling& r, int original) {
  const double low_wavelen = original / r.low_freq_factor;
  const double high_wavelen = original / r.high_freq_factor;
  const torch::Tensor wavelen = 2 * M_PI / inv_freq;
  torch::Tensor scaled = torch::where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq);
  const torch::Tensor smooth =
      (original / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
  const torch::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
  const torch::Tensor medium = wavelen.less(high_wavelen)
                                   .logical_not()
                                   .logical_and(wavelen.greater(low_wavelen).logical_not());
  return torch::where(medium, smoothed, scaled);
}

// yarn: per frequency, a ramp between the interpolated (divided by `factor`) and the
// original frequency over the dimensions whose rotation count within the original
// context lies between beta_slow and beta_fast.
torch::Tensor YarnInvFreq(const torch::Tensor& pos_freqs, const RopeScaling& r, int original,
                          int dim, double base) {
  auto correction_dim = [&](double rotations) {
    return dim * std::log(original / (rotations * 2 * M_PI)) / (2 * std::log(base));
  };
  double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
  if (r.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1.0);
  if (low == high) high += 0.001;
  const torch::Tensor ramp =
      ((torch::arange(dim / 2, torch::kFloat32) - low) / (high - low)).clamp(0, 1);
  const torch::Tensor extrapolation = 1 - ramp;
  return (1.0 / (r.factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation;
}

}  // namespace

std::pair<torch::Tensor, double> RopeInvFreq(const ModelConfig& c) {
  const int dim = c.head_dim;
  const torch::Tensor idx = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32);
  const torch::Tensor pos_freqs = torch::pow(c.rope_theta, idx / static_cast<double>(dim));
  const torch::Tensor inv_freq = 1.0 / pos_freqs;
  const RopeScaling& r = c.rope_scaling;
  const int original = r.original_max_position_embeddings > 0 ? r.original_max_position_embeddings
                                                              : c.max_position_embeddings;
  if (r.type == "linear") return {inv_freq / r.factor, 1.0};
  if (r.type == "llama3") return {Llama3InvFreq(inv_freq, r, original), 1.0};
  if (r.type == "yarn") {
    const double attention = r.attention_factor > 0
                                 ? r.attention_factor
                                 : (r.factor <= 1 ? 1.0 : 0.1 * std::log(r.factor) + 1.0);
    return {YarnInvFreq(pos_freqs, r, original, dim, c.rope_theta), attention};
  }
  return {inv_freq, 1.0};
}

std::pair<torch::Tensor, torch::Tensor> RopeCosSin(const torch::Tensor& positions,
                                                   const ModelConfig& config,
                                                   torch::ScalarType dtype) {
  if (config.rope_scaling.type.empty()) {
    return RopeCosSin(positions, config.head_dim, config.rope_theta, dtype);
  }
  auto [inv_freq, attention] = RopeInvFreq(config);
  const torch::Tensor freqs =
      torch::outer(positions.to(torch::kFloat32), inv_freq.to(positions.device()));
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {(emb.cos() * attention).to(dtype), (emb.sin() * attention).to(dtype)};
}

torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  const torch::Tensor rotated = torch::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

torch::Tensor Mlp(const torch::Tensor& x, const LayerWeights& lw) {
  return torch::linear(torch::silu(torch::linear(x, lw.gate)) * torch::linear(x, lw.up), lw.down);
}

torch::Tensor ForwardFull(const ModelConfig& c, const Weights& w, const torch::Tensor& ids) {
  return torch::linear(ForwardHidden(c, w, ids), w.lm_head);
}

torch::Tensor ForwardHidden(const ModelConfig& c, const Weights& w, const torch::Tensor& ids,
                            std::vector<torch::Tensor>* attention) {
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, g = nh / nkv;
  torch::Tensor x = torch::embedding(w.embed, ids);  // [B, T, H]
  const auto dtype = x.scalar_type();
  const torch::Tensor pos =
      torch::arange(T, torch::TensorOptions().dtype(torch::kInt64).device(ids.device()));
  auto [cos, sin] = RopeCosSin(pos, c, dtype);
  const torch::Tensor mask =
      torch::full({T, T}, -std::numeric_limits<float>::infinity(),
                  torch::TensorOptions().dtype(torch::kFloat32).device(ids.device()))
          .triu(1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  for (const LayerWeights& lw : w.layers) {
    const torch::Tensor h = RmsNorm(x, lw.input_norm, c.rms_norm_eps);
    torch::Tensor q = torch::linear(h, lw.q_w, lw.q_b).view({B, T, nh, hd});
    torch::Tensor k = torch::linear(h, lw.k_w, lw.k_b).view({B, T, nkv, hd});
    if (c.qk_norm) {
      q = RmsNorm(q, lw.q_norm, c.rms_norm_eps);
      k = RmsNorm(k, lw.k_norm, c.rms_norm_eps);
    }
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    torch::Tensor v = torch::linear(h, lw.v_w, lw.v_b).view({B, T, nkv, hd}).transpose(1, 2);
    q = ApplyRope(q, cos, sin);
    k = ApplyRope(k, cos, sin);
    // q [B, nkv, g, T, hd] against k, v [B, nkv, 1, T, hd]: query head i uses kv head i / g.
    const torch::Tensor qg = q.reshape({B, nkv, g, T, hd});
    const torch::Tensor scores =
        torch::matmul(qg * scale, k.unsqueeze(2).transpose(-1, -2)).to(torch::kFloat32) + mask;
    const torch::Tensor probs = torch::softmax(scores, -1).to(dtype);
    if (attention != nullptr) attention->push_back(probs.reshape({B, nh, T, T}));
    const torch::Tensor o = torch::matmul(probs, v.unsqueeze(2))  // [B, nkv, g, T, hd]
                                .reshape({B, nh, T, hd})
                                .transpose(1, 2)
                                .reshape({B, T, nh * hd});
    x = x + torch::linear(o, lw.o_w);
    x = x + Mlp(RmsNorm(x, lw.post_norm, c.rms_norm_eps), lw);
  }
  return RmsNorm(x, w.norm, c.rms_norm_eps);
}

}  // namespace kvstream::model
