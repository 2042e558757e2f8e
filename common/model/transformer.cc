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
                                    const std::vector<int64_t>& shape,
                                    const torch::TensorOptions& opt,
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
                                    const std::shared_ptr<const WeightSet>& in_place) {
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

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const torch::Tensor xf = x.to(torch::kFloat32);
  const torch::Tensor y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * y.to(x.scalar_type());
}

namespace {

// theta^(arange(0, d, 2) / d) in float32, as Hugging Face computes it: the inverse of
// RoPE's unscaled frequencies.
torch::Tensor PosFreqs(int head_dim, double theta) {
  const torch::Tensor idx = torch::arange(0, head_dim, 2, torch::kInt64).to(torch::kFloat32);
  return torch::pow(theta, idx / static_cast<double>(head_dim));
}

// cos, sin [n, head_dim] of positions [n] at `inv_freq` [head_dim / 2], times `attention`.
std::pair<torch::Tensor, torch::Tensor> CosSin(const torch::Tensor& positions,
                                               const torch::Tensor& inv_freq, double attention,
                                               torch::ScalarType dtype) {
  const torch::Tensor freqs =
      torch::outer(positions.to(torch::kFloat32), inv_freq.to(positions.device()));
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  if (attention == 1.0) return {emb.cos().to(dtype), emb.sin().to(dtype)};
  return {(emb.cos() * attention).to(dtype), (emb.sin() * attention).to(dtype)};
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> RopeCosSin(const torch::Tensor& positions, int head_dim,
                                                   double theta, torch::ScalarType dtype) {
  return CosSin(positions, 1.0 / PosFreqs(head_dim, theta), 1.0, dtype);
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
  const torch::Tensor pos_freqs = PosFreqs(dim, c.rope_theta);
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
  const auto [inv_freq, attention] = RopeInvFreq(config);
  return CosSin(positions, inv_freq, attention, dtype);
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

namespace {

// RoPE's cos / sin for ForwardHidden: [T, hd] at 0..T-1, or [B, 1, T, hd] at `positions`.
std::pair<torch::Tensor, torch::Tensor> ForwardCosSin(const ModelConfig& c,
                                                      const torch::Tensor& ids,
                                                      const torch::Tensor* positions,
                                                      torch::ScalarType dtype) {
  const int64_t B = ids.size(0), T = ids.size(1);
  if (positions == nullptr) {
    return RopeCosSin(
        torch::arange(T, torch::TensorOptions().dtype(torch::kInt64).device(ids.device())), c,
        dtype);
  }
  TORCH_CHECK(positions->sizes() == ids.sizes(), "positions: expected the ids' shape ", ids.sizes(),
              ", found ", positions->sizes());
  auto [cos, sin] = RopeCosSin(positions->reshape({B * T}), c, dtype);
  return {cos.view({B, 1, T, -1}), sin.view({B, 1, T, -1})};
}

}  // namespace

torch::Tensor ForwardHidden(const ModelConfig& c, const Weights& w, const torch::Tensor& ids,
                            std::vector<torch::Tensor>* attention, const torch::Tensor* positions) {
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, g = nh / nkv;
  torch::Tensor x = torch::embedding(w.embed, ids);  // [B, T, H]
  const auto dtype = x.scalar_type();
  auto [cos, sin] = ForwardCosSin(c, ids, positions, dtype);
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
