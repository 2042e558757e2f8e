#include "common/model/model.h"

#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/codec/float_formats.h"
#include "common/codec/half.h"
#include "common/model/safetensors.h"
#include "common/model/transformer.h"

namespace kvstream::model {
namespace {

struct Fnv1a {
  uint64_t h = 1469598103934665603ull;
  void Add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  void Add(const std::string& s) { Add(s.data(), s.size()); }
};

}  // namespace

// ---- KvCache -------------------------------------------------------------------------

struct KvCache::Impl {
  int num_layers = 0, kv_heads = 0, head_dim = 0;
  torch::TensorOptions opt;
  std::vector<torch::Tensor> k, v;  // [kv_heads, capacity, head_dim]; slots [0, size) valid
  int size = 0;
  std::vector<int32_t> positions;
  int next_position = 0;

  int capacity() const { return k.empty() || !k[0].defined() ? 0 : static_cast<int>(k[0].size(1)); }

  // Grows every layer to hold `n` slots, by a quarter of the capacity at least (at least
  // 256 slots): amortized O(1) copies per slot, and at most a quarter of a long cache
  // held unused (doubling would hold up to as much again). New slots are left
  // uninitialised: every slot below `size` is written before it is read (a receiver's
  // cache is only used once every cell arrived), and none above it is read.
  void Reserve(int n) {
    if (n <= capacity()) return;
    const int cap = std::max({n, capacity() + std::max(capacity() / 4, 256)});
    for (int l = 0; l < num_layers; ++l) {
      torch::Tensor nk = torch::empty({kv_heads, cap, head_dim}, opt);
      torch::Tensor nv = torch::empty({kv_heads, cap, head_dim}, opt);
      if (size > 0) {
        nk.narrow(1, 0, size).copy_(k[l].narrow(1, 0, size));
        nv.narrow(1, 0, size).copy_(v[l].narrow(1, 0, size));
      }
      k[l] = nk;
      v[l] = nv;
    }
  }

  // Slots [begin, begin + n) of `layer` from [kv_heads, n, head_dim] buffers, float32
  // when `src_f32`, else in the cache's own dtype: on the calling thread for a CPU
  // cache, through torch elsewhere.
  absl::Status Write(int layer, int begin, int n, const void* k, const void* v, bool src_f32);

  absl::Status CheckRange(int layer, int begin, int end) const {
    if (layer < 0 || layer >= num_layers || begin < 0 || end > size || begin > end) {
      return absl::InvalidArgumentError(absl::StrCat("cache: layer ", layer, " slots [", begin,
                                                     ", ", end, ") outside ", num_layers,
                                                     " layers x ", size, " slots"));
    }
    return absl::OkStatus();
  }
};

KvCache::KvCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<KvCache> KvCache::Create(int num_layers, int kv_heads, int head_dim,
                                         const std::vector<int32_t>& positions, int next_position) {
  auto c = std::make_unique<Impl>();
  c->num_layers = num_layers;
  c->kv_heads = kv_heads;
  c->head_dim = head_dim;
  c->opt = torch::TensorOptions().dtype(torch::kFloat32);
  c->k.resize(num_layers);
  c->v.resize(num_layers);
  return Sized(std::move(c), positions, next_position);
}

std::unique_ptr<KvCache> KvCache::Sized(std::unique_ptr<Impl> c,
                                        const std::vector<int32_t>& positions, int next_position) {
  torch::NoGradGuard no_grad;
  c->Reserve(static_cast<int>(positions.size()));
  c->size = static_cast<int>(positions.size());
  c->positions = positions;
  c->next_position = next_position;
  return std::unique_ptr<KvCache>(new KvCache(std::move(c)));
}
KvCache::~KvCache() = default;
int KvCache::num_layers() const { return impl_->num_layers; }
int KvCache::kv_heads() const { return impl_->kv_heads; }
int KvCache::head_dim() const { return impl_->head_dim; }
int KvCache::size() const { return impl_->size; }
bool KvCache::is_bf16() const { return impl_->opt.dtype() == torch::kBFloat16; }
const std::vector<int32_t>& KvCache::positions() const { return impl_->positions; }
int KvCache::next_position() const { return impl_->next_position; }
void KvCache::set_next_position(int p) { impl_->next_position = p; }

uint64_t KvCache::bytes() const {
  uint64_t n = 0;
  for (const auto& t : impl_->k) n += t.numel() * t.element_size();
  for (const auto& t : impl_->v) n += t.numel() * t.element_size();
  return n;
}

absl::Status KvCache::ExportLayer(int layer, int begin, int end, float* k, float* v) const {
  RETURN_IF_ERROR(impl_->CheckRange(layer, begin, end));
  return Guard("cache export", [&]() -> absl::Status {
    const int n = end - begin;
    const torch::Tensor tk =
        impl_->k[layer].narrow(1, begin, n).to(torch::kCPU, torch::kFloat32).contiguous();
    const torch::Tensor tv =
        impl_->v[layer].narrow(1, begin, n).to(torch::kCPU, torch::kFloat32).contiguous();
    std::memcpy(k, tk.data_ptr(), tk.numel() * sizeof(float));
    std::memcpy(v, tv.data_ptr(), tv.numel() * sizeof(float));
    return absl::OkStatus();
  });
}

namespace {

// Slots [begin, begin + n) of every head of a CPU [heads, slots, dim] tensor whose rows are
// contiguous, as [heads, n, dim], by memcpy: no torch kernel, so no intra-op thread team
// is started from a caller's own threads (chunks encode on several). False: use torch.
bool CopySlots(const torch::Tensor& t, int begin, int n, void* out) {
  if (!t.device().is_cpu() || t.dim() != 3 || t.stride(2) != 1 || t.stride(1) != t.size(2)) {
    return false;
  }
  const auto elem = static_cast<int64_t>(t.element_size());
  const int64_t run = n * t.size(2) * elem;
  const char* base = static_cast<const char*>(t.data_ptr());
  char* dst = static_cast<char*>(out);
  for (int64_t h = 0; h < t.size(0); ++h) {
    std::memcpy(dst + h * run, base + (h * t.stride(0) + begin * t.stride(1)) * elem,
                static_cast<size_t>(run));
  }
  return true;
}

}  // namespace

absl::Status KvCache::ExportLayerRaw(int layer, int begin, int end, void* k, void* v) const {
  RETURN_IF_ERROR(impl_->CheckRange(layer, begin, end));
  if (CopySlots(impl_->k[layer], begin, end - begin, k) &&
      CopySlots(impl_->v[layer], begin, end - begin, v)) {
    return absl::OkStatus();
  }
  return Guard("cache export", [&]() -> absl::Status {
    const int n = end - begin;
    const torch::Tensor tk = impl_->k[layer].narrow(1, begin, n).to(torch::kCPU).contiguous();
    const torch::Tensor tv = impl_->v[layer].narrow(1, begin, n).to(torch::kCPU).contiguous();
    std::memcpy(k, tk.data_ptr(), tk.numel() * tk.element_size());
    std::memcpy(v, tv.data_ptr(), tv.numel() * tv.element_size());
    return absl::OkStatus();
  });
}

namespace {

// Writes [kv_heads, n, head_dim] values into slots [begin, begin + n) of a CPU cache
// tensor [kv_heads, capacity, head_dim] on the calling thread: one contiguous run per
// head, converted from float32 when `src_is_f32` and the tensor holds bf16. Runs off the
// model's worker threads (a receiver writes chunks as they arrive), so it takes no
// part in torch's thread pool.
void WriteSlots(torch::Tensor& t, int begin, int n, const void* src, bool src_is_f32) {
  const int64_t heads = t.size(0), cap = t.size(1), dim = t.size(2);
  const size_t run = static_cast<size_t>(n) * dim;
  const bool bf16 = t.scalar_type() == torch::kBFloat16;
  char* base = static_cast<char*>(t.data_ptr());
  const size_t width = bf16 ? 2 : 4;
  for (int64_t h = 0; h < heads; ++h) {
    char* dst = base + (static_cast<size_t>(h * cap + begin) * dim) * width;
    if (!src_is_f32 || !bf16) {  // same dtype
      std::memcpy(dst, static_cast<const char*>(src) + h * run * width, run * width);
      continue;
    }
    codec::FloatsToBf16Rounded(static_cast<const float*>(src) + h * run, static_cast<int64_t>(run),
                               reinterpret_cast<uint8_t*>(dst));
  }
}

}  // namespace

absl::Status KvCache::Impl::Write(int layer, int begin, int n, const void* k, const void* v,
                                  bool src_f32) {
  Impl& c = *this;
  RETURN_IF_ERROR(c.CheckRange(layer, begin, begin + n));
  return Guard("cache write", [&]() -> absl::Status {
    if (c.k[layer].is_cpu() && c.k[layer].is_contiguous()) {
      WriteSlots(c.k[layer], begin, n, k, src_f32);
      WriteSlots(c.v[layer], begin, n, v, src_f32);
      return absl::OkStatus();
    }
    const auto src =
        torch::TensorOptions().dtype(src_f32 ? torch::kFloat32 : c.k[layer].scalar_type());
    const std::vector<int64_t> shape = {c.kv_heads, n, c.head_dim};
    c.k[layer].narrow(1, begin, n).copy_(torch::from_blob(const_cast<void*>(k), shape, src));
    c.v[layer].narrow(1, begin, n).copy_(torch::from_blob(const_cast<void*>(v), shape, src));
    return absl::OkStatus();
  });
}

absl::Status KvCache::WriteLayer(int layer, int begin, int n, const float* k, const float* v) {
  return impl_->Write(layer, begin, n, k, v, /*src_f32=*/true);
}

absl::Status KvCache::WriteLayerRaw(int layer, int begin, int n, const void* k, const void* v) {
  return impl_->Write(layer, begin, n, k, v, /*src_f32=*/false);
}

absl::StatusOr<KvCache::Rows> KvCache::MutableRows(int layer, int begin, int n) {
  Impl& c = *impl_;
  RETURN_IF_ERROR(c.CheckRange(layer, begin, begin + n));
  torch::Tensor& k = c.k[layer];
  torch::Tensor& v = c.v[layer];
  if (!k.is_cpu() || !v.is_cpu() || !k.is_contiguous() || !v.is_contiguous()) {
    return absl::FailedPreconditionError("cache rows are written in place on the CPU only");
  }
  const int64_t offset = static_cast<int64_t>(begin) * c.head_dim;
  return Rows{static_cast<char*>(k.data_ptr()) + offset * k.element_size(),
              static_cast<char*>(v.data_ptr()) + offset * v.element_size(),
              k.stride(0) / c.head_dim};
}

absl::Status KvCache::Compact(const std::vector<int32_t>& slots) {
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] < 0 || slots[i] >= impl_->size || (i > 0 && slots[i] <= slots[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache compact: slot index ", i, " = ", slots[i],
                       " is not strictly increasing within [0, ", impl_->size, ")"));
    }
  }
  return Gather(slots);
}

absl::Status KvCache::Gather(const std::vector<int32_t>& slots) {
  return Guard("cache gather", [&]() -> absl::Status {
    std::vector<int64_t> idx64(slots.begin(), slots.end());
    const torch::Tensor idx = torch::tensor(idx64, torch::kInt64).to(impl_->opt.device());
    for (int l = 0; l < impl_->num_layers; ++l) {
      impl_->k[l] = impl_->k[l].narrow(1, 0, impl_->size).index_select(1, idx);
      impl_->v[l] = impl_->v[l].narrow(1, 0, impl_->size).index_select(1, idx);
    }
    std::vector<int32_t> kept;
    kept.reserve(slots.size());
    for (int32_t s : slots) kept.push_back(impl_->positions[s]);
    impl_->positions = std::move(kept);
    impl_->size = static_cast<int>(slots.size());
    return absl::OkStatus();
  });
}

absl::Status KvCache::CheckDistinct(const std::vector<int32_t>& slots, const char* what) const {
  std::vector<bool> seen(static_cast<size_t>(impl_->size), false);
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] < 0 || slots[i] >= impl_->size || seen[slots[i]]) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache ", what, ": slot index ", i, " = ", slots[i],
                       " is not a distinct slot within [0, ", impl_->size, ")"));
    }
    seen[slots[i]] = true;
  }
  return absl::OkStatus();
}

absl::Status KvCache::Reorder(const std::vector<int32_t>& slots) {
  RETURN_IF_ERROR(CheckDistinct(slots, "reorder"));
  return Gather(slots);
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Copy(const std::vector<int32_t>& slots) const {
  RETURN_IF_ERROR(CheckDistinct(slots, "copy"));
  auto impl = std::make_unique<Impl>(*impl_);  // shares tensors until Gather replaces them
  std::unique_ptr<KvCache> copy(new KvCache(std::move(impl)));
  RETURN_IF_ERROR(copy->Gather(slots));
  return copy;
}

// ---- Model ---------------------------------------------------------------------------

// Attention statistics gathered during a prefill, per layer and head over key slots:
// every query row (cumulative), the question's rows, the question through the last row,
// and SnapKV's observation window (the last `window` rows).
class StatsAccumulator {
 public:
  StatsAccumulator(const ModelConfig& c, int64_t slots, int64_t tokens,
                   const PrefillOptions& options, const torch::Device& dev)
      : q_begin_(options.spans.question_begin),
        q_end_(options.spans.question_end),
        w_begin_(std::max<int64_t>(0, tokens - options.window)),
        tokens_(tokens),
        window_(options.window) {
    const auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(dev);
    for (torch::Tensor* t : {&question_, &question_tail_, &window_rows_, &cumulative_}) {
      *t = torch::zeros({c.num_layers, c.num_heads, slots}, f32);
    }
  }

  // Adds layer `l`'s probabilities of query rows [i0, i0 + nb) over key slots [0, sb).
  void Add(int l, const torch::Tensor& probs, int64_t i0, int64_t nb, int64_t sb) {
    const int64_t nh = cumulative_.size(1);
    const torch::Tensor p = probs.view({nh, nb, sb});
    auto sum_rows = [](const torch::Tensor& t) { return t.sum(1, false, torch::kFloat32); };
    cumulative_[l].narrow(1, 0, sb).add_(sum_rows(p));
    auto add_rows = [&](torch::Tensor& dst, int64_t a, int64_t b) {
      a = std::max(a, i0);
      b = std::min(b, i0 + nb);
      if (a < b) dst[l].narrow(1, 0, sb).add_(sum_rows(p.narrow(1, a - i0, b - a)));
    };
    add_rows(question_, q_begin_, q_end_);
    add_rows(question_tail_, q_begin_, tokens_);
    add_rows(window_rows_, w_begin_, tokens_);
  }

  void Export(select::AttentionStats& stats) const {
    stats.num_layers = static_cast<int>(cumulative_.size(0));
    stats.num_heads = static_cast<int>(cumulative_.size(1));
    stats.num_tokens = static_cast<int>(cumulative_.size(2));
    stats.window_size = window_;
    auto to_vec = [](const torch::Tensor& t) {
      const torch::Tensor cpu = t.to(torch::kCPU).contiguous();
      return std::vector<float>(cpu.data_ptr<float>(), cpu.data_ptr<float>() + cpu.numel());
    };
    stats.cumulative = to_vec(cumulative_);
    stats.window = to_vec(window_rows_);
    if (q_end_ > q_begin_) {
      stats.question = to_vec(question_);
      stats.question_tail = to_vec(question_tail_);
    }
  }

 private:
  const int64_t q_begin_, q_end_, w_begin_, tokens_;
  const int window_;
  torch::Tensor question_, question_tail_, window_rows_, cumulative_;  // [layers, heads, slots]
};

// One forward pass of `tokens` at `positions` after the slots `cache` holds: embeds
// them, runs layers one at a time (each appends its keys and values to the cache), and
// gives the logits of the last rows. Attention runs in blocks of query rows.
class ForwardPass {
 public:
  ForwardPass(const ModelConfig& c, const Weights& w, const torch::TensorOptions& opt,
              KvCache::Impl& cache, absl::Span<const int32_t> tokens,
              absl::Span<const int32_t> positions, const std::vector<uint8_t>* keep,
              const PrefillOptions* stats_opt)
      : c_(c),
        w_(w),
        opt_(opt),
        cache_(cache),
        T_(static_cast<int64_t>(tokens.size())),
        slot0_(cache.size),
        S_(slot0_ + T_),
        block_(stats_opt != nullptr ? std::max(1, stats_opt->query_block) : 256),
        interrupt_(stats_opt != nullptr && stats_opt->interrupt ? &stats_opt->interrupt : nullptr) {
    cache_.Reserve(static_cast<int>(S_));
    const auto dev = opt_.device();
    std::vector<int64_t> ids(tokens.begin(), tokens.end());
    std::vector<int64_t> qpos_v(positions.begin(), positions.end());
    std::vector<int64_t> kpos_v(cache.positions.begin(), cache.positions.end());
    kpos_v.insert(kpos_v.end(), qpos_v.begin(), qpos_v.end());
    qpos_ = torch::tensor(qpos_v, torch::kInt64).to(dev);
    kpos_ = torch::tensor(kpos_v, torch::kInt64).to(dev);
    x_ = torch::embedding(w_.embed, torch::tensor(ids, torch::kInt64).to(dev));  // [T, H]
    std::tie(cos_, sin_) = RopeCosSin(qpos_, c_, opt_.dtype().toScalarType());
    if (keep != nullptr && !keep->empty()) {
      std::vector<int64_t> kv(static_cast<size_t>(slot0_), 1);
      kv.insert(kv.end(), keep->begin(), keep->end());
      keep_ = torch::tensor(kv, torch::kInt64).to(dev).ne(0);
    }
    // Positions increasing along the slots (every prefill and extension; compaction keeps
    // the order), and no keep mask: attention is plainly causal over the slots.
    causal_ = !keep_.defined() && std::is_sorted(kpos_v.begin(), kpos_v.end(),
                                                 [](int64_t a, int64_t b) { return a <= b; });
    if (causal_ && T_ > 1) {  // [block, block]: true above the diagonal
      const int64_t n = std::min<int64_t>(block_, T_);
      diagonal_mask_ =
          torch::ones({n, n}, torch::TensorOptions().dtype(torch::kBool).device(dev)).triu(1);
    }
    if (stats_opt != nullptr && stats_opt->collect_stats) {
      stats_.emplace(c_, S_, T_, *stats_opt, dev);
    }
  }

  int64_t slots() const { return S_; }

  // Layer `l`: attention over the cache (this pass's keys and values appended), then
  // the MLP, on the residual stream.
  absl::Status Layer(int l) {
    const LayerWeights& lw = w_.layers[l];
    const int64_t nh = c_.num_heads, nkv = c_.num_kv_heads, hd = c_.head_dim;
    const torch::Tensor h = RmsNorm(x_, lw.input_norm, c_.rms_norm_eps);
    torch::Tensor q = torch::linear(h, lw.q_w, lw.q_b).view({T_, nh, hd});
    torch::Tensor k = torch::linear(h, lw.k_w, lw.k_b).view({T_, nkv, hd});
    if (c_.qk_norm) {  // Qwen3: per head, before RoPE
      q = RmsNorm(q, lw.q_norm, c_.rms_norm_eps);
      k = RmsNorm(k, lw.k_norm, c_.rms_norm_eps);
    }
    q = ApplyRope(q.transpose(0, 1), cos_, sin_);  // [nh, T, hd]
    k = ApplyRope(k.transpose(0, 1), cos_, sin_);  // [nkv, T, hd]
    const torch::Tensor v = torch::linear(h, lw.v_w, lw.v_b).view({T_, nkv, hd}).transpose(0, 1);
    cache_.k[l].narrow(1, slot0_, T_).copy_(k);
    cache_.v[l].narrow(1, slot0_, T_).copy_(v);
    ASSIGN_OR_RETURN(const torch::Tensor out, Attention(l, q));
    x_ = x_ + torch::linear(out.transpose(0, 1).reshape({T_, nh * hd}), lw.o_w);
    // The MLP's [tokens, intermediate] activations are the largest of a long prompt:
    // rows go through it a block at a time, so its memory does not grow with length.
    constexpr int64_t kMlpRows = 1024;
    for (int64_t r0 = 0; r0 < T_; r0 += kMlpRows) {
      torch::Tensor xr = x_.narrow(0, r0, std::min(kMlpRows, T_ - r0));
      xr.add_(Mlp(RmsNorm(xr, lw.post_norm, c_.rms_norm_eps), lw));
    }
    return absl::OkStatus();
  }

  void ExportStats(select::AttentionStats& stats) const {
    if (stats_.has_value()) stats_->Export(stats);
  }

  std::vector<float> Logits(int64_t rows) const {
    const torch::Tensor last = RmsNorm(x_.narrow(0, T_ - rows, rows), w_.norm, c_.rms_norm_eps);
    const torch::Tensor logits =
        torch::linear(last, w_.lm_head).to(torch::kCPU, torch::kFloat32).contiguous();
    return std::vector<float>(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  }

 private:
  // Layer `l`'s attention output [nh, T, hd] for queries `q` [nh, T, hd]. A kv head's g
  // query heads are rows of one product with its keys ([nkv, g * nb, hd] x [nkv, hd,
  // sb]), so the keys and values are read in place, never broadcast (and copied) to every
  // query head.
  absl::StatusOr<torch::Tensor> Attention(int l, const torch::Tensor& q) {
    const int64_t nh = c_.num_heads, nkv = c_.num_kv_heads, hd = c_.head_dim, g = nh / nkv;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const torch::Tensor K = cache_.k[l].narrow(1, 0, S_);  // [nkv, S, hd]
    const torch::Tensor V = cache_.v[l].narrow(1, 0, S_);
    torch::Tensor out = torch::empty({nh, T_, hd}, opt_);
    for (int64_t i0 = 0; i0 < T_; i0 += block_) {
      const int64_t nb = std::min<int64_t>(block_, T_ - i0);
      if (interrupt_ != nullptr) RETURN_IF_ERROR((*interrupt_)());
      // With positions increasing along the slots, a query block sees exactly the keys up
      // to its own last slot, and only its diagonal square needs a mask: the keys after
      // it are left out of the products instead of masked.
      const int64_t sb = causal_ ? slot0_ + i0 + nb : S_;
      const torch::Tensor qb = (q.narrow(1, i0, nb) * scale).reshape({nkv, g * nb, hd});
      torch::Tensor scores =
          torch::matmul(qb, K.narrow(1, 0, sb).transpose(-1, -2)).view({nkv, g, nb, sb});
      Mask(scores, i0, nb, sb);
      // In the compute dtype: for bf16 the kernel works in float32 and rounds once, the
      // same probabilities as a float32 softmax cast to bf16 for the product with V
      // (as Hugging Face's eager attention does), without two float32 copies of the
      // scores.
      const torch::Tensor probs = torch::softmax(scores, -1);  // [nkv, g, nb, sb]
      if (stats_.has_value()) stats_->Add(l, probs, i0, nb, sb);
      out.narrow(1, i0, nb).copy_(
          torch::matmul(probs.view({nkv, g * nb, sb}), V.narrow(1, 0, sb)).view({nh, nb, hd}));
    }
    return out;
  }

  // Hides from query rows [i0, i0 + nb) the keys they may not see: later positions, and
  // with a keep mask the dropped slots (each row still sees itself).
  void Mask(torch::Tensor& scores, int64_t i0, int64_t nb, int64_t sb) const {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    if (causal_) {
      if (nb > 1) {
        scores.narrow(-1, sb - nb, nb)
            .masked_fill_(diagonal_mask_.narrow(0, 0, nb).narrow(1, 0, nb), neg_inf);
      }
      return;
    }
    if (T_ == 1 && !keep_.defined()) return;
    torch::Tensor visible = kpos_.unsqueeze(0) <= qpos_.narrow(0, i0, nb).unsqueeze(1);  // [nb, S]
    if (keep_.defined()) {
      const auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(opt_.device());
      const torch::Tensor self = torch::arange(S_, i64).unsqueeze(0) ==
                                 torch::arange(slot0_ + i0, slot0_ + i0 + nb, i64).unsqueeze(1);
      visible = visible.logical_and(keep_.unsqueeze(0).logical_or(self));
    }
    scores.masked_fill_(visible.logical_not(), neg_inf);
  }

  const ModelConfig& c_;
  const Weights& w_;
  const torch::TensorOptions& opt_;
  KvCache::Impl& cache_;
  const int64_t T_, slot0_, S_;  // new tokens, the first new slot, slots after the pass
  const int block_;              // query rows per attention block
  const std::function<absl::Status()>* interrupt_;
  torch::Tensor qpos_, kpos_, x_, cos_, sin_, keep_, diagonal_mask_;
  bool causal_ = false;
  std::optional<StatsAccumulator> stats_;
};

struct Model::Impl {
  ModelConfig config;
  Weights w;
  std::string fingerprint;
  std::string dir;
  torch::TensorOptions opt;

  std::unique_ptr<KvCache::Impl> EmptyCache() const {
    auto c = std::make_unique<KvCache::Impl>();
    c->num_layers = config.num_layers;
    c->kv_heads = config.num_kv_heads;
    c->head_dim = config.head_dim;
    c->opt = opt;
    c->k.resize(config.num_layers);
    c->v.resize(config.num_layers);
    return c;
  }

  absl::Status CheckTokens(absl::Span<const int32_t> tokens, absl::Span<const int32_t> positions,
                           const KvCache::Impl& cache) const {
    if (tokens.empty()) return absl::InvalidArgumentError("no tokens to run");
    if (tokens.size() != positions.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(tokens.size(), " tokens but ", positions.size(), " positions"));
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || tokens[i] >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token ", i, " is id ", tokens[i],
                                                       ", expected 0..", config.vocab_size - 1));
      }
      const int prev =
          i > 0 ? positions[i - 1] : (cache.positions.empty() ? -1 : cache.positions.back());
      if (positions[i] <= prev) {
        return absl::InvalidArgumentError(
            absl::StrCat("position ", positions[i], " of token ", i, " must exceed ", prev));
      }
      if (positions[i] >= config.max_position_embeddings) {
        return absl::InvalidArgumentError(
            absl::StrCat("position ", positions[i], " is beyond the model's maximum of ",
                         config.max_position_embeddings, " positions"));
      }
    }
    return absl::OkStatus();
  }

  // Runs tokens through every layer, appending their K/V to `cache`; returns the logits of
  // the last `rows` tokens, row major. With `keep` (fresh cache only), masked tokens are invisible
  // to other queries. With `stats`, accumulates attention statistics (fresh cache only).
  // With `after_layer`, the cache takes its new slots and positions before the first
  // layer runs, so that the callback sees them.
  absl::StatusOr<std::vector<float>> Run(
      KvCache::Impl& cache, absl::Span<const int32_t> tokens, absl::Span<const int32_t> positions,
      const std::vector<uint8_t>* keep, const PrefillOptions* stats_opt,
      select::AttentionStats* stats, int64_t rows = 1,
      const std::function<absl::Status(int)>& after_layer = nullptr) const {
    torch::NoGradGuard no_grad;
    ForwardPass pass(config, w, opt, cache, tokens, positions, keep, stats_opt);
    // Otherwise only a pass that completes changes the cache's slots (an interrupted
    // Extend leaves it as it was).
    auto take_slots = [&] {
      cache.size = static_cast<int>(pass.slots());
      cache.positions.insert(cache.positions.end(), positions.begin(), positions.end());
      cache.next_position = positions.back() + 1;
    };
    if (after_layer) take_slots();
    for (int l = 0; l < config.num_layers; ++l) {
      RETURN_IF_ERROR(pass.Layer(l));
      if (after_layer) RETURN_IF_ERROR(after_layer(l));
    }
    if (!after_layer) take_slots();
    if (stats != nullptr) pass.ExportStats(*stats);
    return pass.Logits(rows);
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
const ModelConfig& Model::config() const { return impl_->config; }
const std::string& Model::fingerprint() const { return impl_->fingerprint; }
const std::string& Model::dir() const { return impl_->dir; }
bool Model::is_bf16() const { return impl_->opt.dtype() == torch::kBFloat16; }

int SetComputeThreads(int threads) {
  torch::set_num_threads(
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return ComputeThreads();
}

int ComputeThreads() { return torch::get_num_threads(); }

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir,
                                                   const RuntimeOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  ASSIGN_OR_RETURN(impl->config, ModelConfig::Load(dir + "/config.json"));
  if (options.dtype != "f32" && options.dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat(
        "dtype must be f32 or bf16 (fp16 matmul has no CPU kernel), found ", options.dtype));
  }
  RETURN_IF_ERROR(Guard("device", [&]() -> absl::Status {
    const torch::Device device(options.device);
    if (device.is_cuda() && !torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", options.device, " requested, but libtorch sees no CUDA device"));
    }
    impl->opt = torch::TensorOptions()
                    .dtype(options.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32)
                    .device(device);
    return absl::OkStatus();
  }));
  ASSIGN_OR_RETURN(std::shared_ptr<const WeightSet> set, WeightSet::OpenDir(dir));
  RETURN_IF_ERROR(Guard("load weights", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(impl->w, LoadWeights(impl->config, *set, impl->opt, set));
    return absl::OkStatus();
  }));

  // Fingerprint: what must agree for one side's cache to be valid on the other.
  Fnv1a h;
  const ModelConfig& c = impl->config;
  h.Add(absl::StrCat(c.architecture, "|", c.vocab_size, "|", c.hidden_size, "|", c.num_layers, "|",
                     c.num_heads, "|", c.num_kv_heads, "|", c.head_dim, "|", c.rope_theta));
  if (!c.rope_scaling.type.empty() || c.qk_norm) {  // absent before they existed
    h.Add(absl::StrCat("|", c.rope_scaling.type, "|", c.rope_scaling.factor, "|",
                       c.rope_scaling.original_max_position_embeddings, "|", c.qk_norm));
  }
  for (const auto& file : set->files()) {
    h.Add(file->header());
    for (const auto& [name, view] : file->tensors()) {
      // A strided sample of every tensor's bytes: differently trained weights of the
      // same shapes get different fingerprints without hashing gigabytes.
      const uint64_t step = std::max<uint64_t>(64, view.nbytes / 64);
      for (uint64_t off = 0; off + 8 <= view.nbytes; off += step) h.Add(view.data + off, 8);
    }
  }
  std::ifstream tok(dir + "/tokenizer.json", std::ios::binary);
  if (tok) {
    std::stringstream ss;
    ss << tok.rdbuf();
    h.Add(ss.str());
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h.h));
  std::string arch = c.architecture.substr(0, c.architecture.find("For"));
  std::transform(arch.begin(), arch.end(), arch.begin(), ::tolower);
  impl->fingerprint = absl::StrCat(arch, "-", hex);
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

absl::StatusOr<PrefillResult> Model::Prefill(absl::Span<const int32_t> tokens,
                                             const PrefillOptions& options) {
  auto cache = impl_->EmptyCache();
  std::vector<int32_t> positions(tokens.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(i);
  RETURN_IF_ERROR(impl_->CheckTokens(tokens, positions, *cache));
  const bool masked = !options.keep_mask.empty();
  if (masked && options.keep_mask.size() != tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat("keep mask has ", options.keep_mask.size(),
                                                   " entries for ", tokens.size(), " tokens"));
  }
  if (options.collect_stats) {
    const auto& s = options.spans;
    if (s.num_tokens != static_cast<int>(tokens.size()) || s.question_begin < 0 ||
        s.question_end < s.question_begin || s.question_end > s.num_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt spans cover ", s.num_tokens, " tokens (question [", s.question_begin,
                       ", ", s.question_end, ")), the prompt has ", tokens.size()));
    }
    if (options.window < 1) return absl::InvalidArgumentError("stats window must be >= 1");
  }
  const int n = static_cast<int>(tokens.size());
  if (options.cache_tokens > n || options.cache_tokens == 0 ||
      (masked && options.cache_tokens >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cache_tokens must be in [1, ", n,
        "] (or -1: all) and is not combined with a keep mask; found ", options.cache_tokens));
  }
  if (masked && options.on_layer) {
    return absl::InvalidArgumentError("on_layer is not combined with a keep mask");
  }
  PrefillResult result;
  KvCache::Impl& impl = *cache;
  result.cache.reset(new KvCache(std::move(cache)));
  std::function<absl::Status(int)> after_layer;
  if (options.on_layer) {
    after_layer = [&options, &result](int l) { return options.on_layer(l, *result.cache); };
  }
  RETURN_IF_ERROR(Guard("prefill", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(
        result.last_logits,
        impl_->Run(impl, tokens, positions, masked ? &options.keep_mask : nullptr, &options,
                   options.collect_stats ? &result.stats : nullptr, 1, after_layer));
    return absl::OkStatus();
  }));
  if (masked) {
    std::vector<int32_t> kept;
    for (size_t i = 0; i < options.keep_mask.size(); ++i) {
      if (options.keep_mask[i]) kept.push_back(static_cast<int32_t>(i));
    }
    RETURN_IF_ERROR(result.cache->Compact(kept));
  }
  if (options.cache_tokens >= 0 && options.cache_tokens < n) {
    KvCache::Impl& c = *result.cache->impl_;  // slots [0, size) stay valid
    c.size = options.cache_tokens;
    c.positions.resize(static_cast<size_t>(options.cache_tokens));
    c.next_position = options.cache_tokens;
  }
  return result;
}

absl::StatusOr<PrefillResult> PrefillForSelection(Model& model, absl::Span<const int32_t> tokens,
                                                  const select::PromptSpans& spans, int window,
                                                  std::function<absl::Status()> interrupt) {
  if (tokens.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("a prompt of ", tokens.size(), " tokens; expected at least 2"));
  }
  PrefillOptions po;
  po.collect_stats = true;
  po.spans = spans;
  po.spans.num_tokens = static_cast<int>(tokens.size());
  po.window = window;
  po.interrupt = std::move(interrupt);
  po.cache_tokens = static_cast<int>(tokens.size()) - 1;
  return model.Prefill(tokens, po);
}

absl::StatusOr<std::vector<float>> Model::Extend(KvCache& cache, absl::Span<const int32_t> tokens,
                                                 absl::Span<const int32_t> positions, int rows) {
  KvCache::Impl& c = *cache.impl_;
  if (c.num_layers != impl_->config.num_layers || c.kv_heads != impl_->config.num_kv_heads ||
      c.head_dim != impl_->config.head_dim) {
    return absl::FailedPreconditionError("cache was built for a different model shape");
  }
  RETURN_IF_ERROR(impl_->CheckTokens(tokens, positions, c));
  if (rows < 1 || rows > static_cast<int>(tokens.size())) {
    return absl::InvalidArgumentError(absl::StrCat("extend: logits of ", rows, " rows of ",
                                                   tokens.size(), " tokens; expected 1 to ",
                                                   tokens.size()));
  }
  return Guard("extend", [&]() -> absl::StatusOr<std::vector<float>> {
    return impl_->Run(c, tokens, positions, nullptr, nullptr, nullptr, rows);
  });
}

std::unique_ptr<KvCache> Model::NewCache(const std::vector<int32_t>& positions,
                                         int next_position) const {
  return KvCache::Sized(impl_->EmptyCache(), positions, next_position);
}

absl::StatusOr<std::vector<float>> Model::FullLogits(absl::Span<const int32_t> tokens) {
  KvCache::Impl empty;
  std::vector<int32_t> positions(tokens.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int32_t>(i);
  RETURN_IF_ERROR(impl_->CheckTokens(tokens, positions, empty));
  return Guard("full forward", [&]() -> absl::StatusOr<std::vector<float>> {
    torch::NoGradGuard no_grad;
    std::vector<int64_t> ids(tokens.begin(), tokens.end());
    const torch::Tensor t = torch::tensor(ids, torch::kInt64).to(impl_->opt.device()).unsqueeze(0);
    const torch::Tensor logits =
        ForwardFull(impl_->config, impl_->w, t).to(torch::kCPU, torch::kFloat32).contiguous();
    return std::vector<float>(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  });
}

}  // namespace kvstream::model
