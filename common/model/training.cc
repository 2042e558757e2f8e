#include "common/model/training.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"

namespace kvstream::model {

std::vector<int64_t> GappedPositions(int64_t n, int64_t span, int64_t gap_end,
                                     std::mt19937_64& rng) {
  if (span <= n || gap_end < 2) return {};
  const int64_t extra = std::uniform_int_distribution<int64_t>(0, span - n)(rng);
  const int64_t first = std::uniform_int_distribution<int64_t>(0, extra)(rng);
  std::uniform_int_distribution<int64_t> at(1, gap_end - 1);
  const int64_t a = at(rng);
  const int64_t b = at(rng);
  std::vector<int64_t> positions(n);
  for (int64_t j = 0; j < n; ++j) {
    positions[j] =
        j + (j >= std::min(a, b) ? first : 0) + (j >= std::max(a, b) ? extra - first : 0);
  }
  return positions;
}

Weights InitWeights(const ModelConfig& c, uint64_t seed, double std, bool attention_bias) {
  torch::manual_seed(seed);
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t QD = int64_t{c.num_heads} * c.head_dim, KD = int64_t{c.num_kv_heads} * c.head_dim;
  auto normal = [&](const std::vector<int64_t>& shape) { return torch::randn(shape) * std; };
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
  if (s.qk_norm || b.qk_norm) {
    return absl::InvalidArgumentError("cannot grow: models with per-head q/k norms (Qwen3)");
  }
  RETURN_IF_ERROR(need(b.tie_word_embeddings == s.tie_word_embeddings, "tie_word_embeddings",
                       s.tie_word_embeddings, b.tie_word_embeddings));
  if (b.rope_theta != s.rope_theta) {  // the same function needs the same rotations
    return absl::InvalidArgumentError(
        absl::StrCat("cannot grow: rope_theta must be ", s.rope_theta, ", found ", b.rope_theta));
  }
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  auto jitter = [&](const torch::Tensor& t) {
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
  auto place = [&](const torch::Tensor& rows,
                   const torch::Tensor& sub) {  // rows: [hd, d]; sub: [d, hd]
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

}  // namespace kvstream::model
