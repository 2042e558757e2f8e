#include "common/model/kv_chunks.h"

#include <algorithm>
#include <atomic>
#include <numeric>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/status.h"
#include "common/codec/float_formats.h"
#include "common/codec/quantize.h"

namespace kvstream::model {

namespace {

// Layer `l`'s K and V at slots [tb, te) in `source`: the cache's own dtype, or float32
// converted here from a bf16 cache (exactly: bf16 is float32's top half). Never through
// torch kernels, so encoding threads do not each start torch's intra-op threads.
absl::Status ExportAs(const KvCache& cache, codec::DType source, int l, int tb, int te, void* k,
                      void* v, std::vector<uint8_t>& scratch) {
  const bool native = (source == codec::DType::kBF16) == cache.is_bf16();
  if (native) return cache.ExportLayerRaw(l, tb, te, k, v);
  const int64_t n = static_cast<int64_t>(cache.kv_heads()) * (te - tb) * cache.head_dim();
  scratch.resize(static_cast<size_t>(4 * n));
  RETURN_IF_ERROR(cache.ExportLayerRaw(l, tb, te, scratch.data(), scratch.data() + 2 * n));
  codec::Bf16sToFloats(scratch.data(), n, static_cast<float*>(k));
  codec::Bf16sToFloats(scratch.data() + 2 * n, n, static_cast<float*>(v));
  return absl::OkStatus();
}

// One chunk: layers [lb, le) x slots [tb, te) of `cache` under `spec`, read in `source`
// (the cache's own dtype for raw specs, float32 otherwise).
absl::StatusOr<kvstream::v1::KvChunk> EncodeBlock(const KvCache& cache, const codec::Plan& plan,
                                                  const codec::LayerSpec& spec, codec::DType source,
                                                  const std::string& session_id, uint64_t seq,
                                                  int lb, int le, int tb, int te) {
  const int H = cache.kv_heads(), D = cache.head_dim(), n = te - tb;
  const size_t tensor_bytes =
      static_cast<size_t>(H) * n * D * static_cast<size_t>(codec::DTypeBytes(source));
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<uint8_t> scratch;
  std::vector<codec::LayerKv> views;
  buffers.reserve(2 * (le - lb));
  for (int l = lb; l < le; ++l) {
    buffers.emplace_back(tensor_bytes);
    buffers.emplace_back(tensor_bytes);
    void* k = buffers[buffers.size() - 2].data();
    void* v = buffers.back().data();
    RETURN_IF_ERROR(ExportAs(cache, source, l, tb, te, k, v, scratch));
    views.push_back({k, v});
  }
  codec::ChunkMeta m;
  m.session_id = session_id;
  m.seq = seq;
  m.layer_begin = lb;
  m.layer_end = le;
  m.token_begin = tb;
  m.positions.assign(cache.positions().begin() + tb, cache.positions().begin() + te);
  m.kv_heads = H;
  m.head_dim = D;
  m.source_dtype = source;
  m.spec = spec;
  m.zstd_level = plan.zstd_level;
  return codec::EncodeChunk(m, views);
}

}  // namespace

namespace {

absl::Status PastPayload(const codec::ChunkMeta& meta, const codec::PayloadView& payload) {
  return absl::InvalidArgumentError(absl::StrCat(
      "chunk ", meta.seq, ": its tensors run past the payload's ", payload.size(), " bytes"));
}

// A run of layers sent under one spec, and how its chunks are cut.
struct LayerGroup {
  int begin = 0, end = 0;
  codec::LayerSpec spec;
  codec::DType source = codec::DType::kF32;
  int layers_per_chunk = 1;
  int tokens_per_chunk = 0;
};

// Layers [first, last) grouped where the plan gives them the same LayerSpec; whole
// layers per chunk when a layer's `N` slots fit max_chunk_bytes, else runs of tokens.
std::vector<LayerGroup> GroupLayers(const KvCache& cache, const codec::Plan& plan, int first,
                                    int last, int N, uint64_t max_chunk_bytes) {
  const int H = cache.kv_heads(), D = cache.head_dim();
  const codec::DType native = cache.is_bf16() ? codec::DType::kBF16 : codec::DType::kF32;
  std::vector<LayerGroup> groups;
  for (int layer = first; layer < last;) {
    LayerGroup g;
    g.begin = layer;
    g.spec = plan.ForLayer(layer);
    g.end = layer + 1;
    while (g.end < last && plan.ForLayer(g.end) == g.spec) ++g.end;
    // Raw specs ship the cache's own dtype; everything else is encoded from float32.
    const bool raw =
        g.spec.k.format == codec::Format::kRaw || g.spec.v.format == codec::Format::kRaw;
    g.source = raw ? native : codec::DType::kF32;
    const uint64_t per_layer_all = codec::EncodedTensorBytes(g.spec.k, {H, N, D}, g.source) +
                                   codec::EncodedTensorBytes(g.spec.v, {H, N, D}, g.source);
    const uint64_t per_token = std::max<uint64_t>(1, per_layer_all / static_cast<uint64_t>(N));
    g.tokens_per_chunk = N;
    if (per_layer_all <= max_chunk_bytes) {
      g.layers_per_chunk = static_cast<int>(std::max<uint64_t>(1, max_chunk_bytes / per_layer_all));
    } else {
      g.tokens_per_chunk = static_cast<int>(std::max<uint64_t>(1, max_chunk_bytes / per_token));
    }
    groups.push_back(g);
    layer = g.end;
  }
  return groups;
}

// The slot ranges chunks must not straddle: the plan's tiers, or every slot as one.
absl::StatusOr<std::vector<std::pair<int, int>>> SlotRanges(const ChunkingOptions& options, int N) {
  if (options.tier_slots.empty()) return std::vector<std::pair<int, int>>{{0, N}};
  std::vector<std::pair<int, int>> ranges;
  int at = 0;
  for (uint32_t n : options.tier_slots) {
    if (n == 0 || at + static_cast<int64_t>(n) > N) break;
    ranges.emplace_back(at, at + static_cast<int>(n));
    at += static_cast<int>(n);
  }
  if (at != N || ranges.size() != options.tier_slots.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tiers of ", absl::StrJoin(options.tier_slots, "+"),
                     " slots do not split the ", N, " slots sent into non-empty runs"));
  }
  return ranges;
}

// One chunk to encode: layers [lb, le) x slots [tb, te) of a group.
struct Block {
  const LayerGroup* group;
  int lb, le, tb, te;
};

// Encodes blocks[i] into out[i] with seq first_seq + i, on `threads` threads that take
// the next block in turn; the first error (by block) is returned.
absl::Status EncodeBlocks(const KvCache& cache, const codec::Plan& plan,
                          const std::string& session_id, uint64_t first_seq,
                          const std::vector<Block>& blocks, int threads,
                          std::vector<kvstream::v1::KvChunk>& out) {
  std::vector<absl::Status> status(blocks.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < blocks.size();) {
      const Block& b = blocks[i];
      absl::StatusOr<kvstream::v1::KvChunk> chunk =
          EncodeBlock(cache, plan, b.group->spec, b.group->source, session_id, first_seq + i, b.lb,
                      b.le, b.tb, b.te);
      if (chunk.ok()) {
        out[i] = std::move(*chunk);
      } else {
        status[i] = chunk.status();
        next = blocks.size();  // stop handing out blocks
      }
    }
  };
  const int helpers = std::min(std::max(threads, 1), static_cast<int>(blocks.size())) - 1;
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(std::max(helpers, 0)));
  for (int t = 0; t < helpers; ++t) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // no more threads to be had: those started (and this one) do the work
    }
  }
  work();
  for (std::thread& t : pool) t.join();
  for (const absl::Status& st : status) RETURN_IF_ERROR(st);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<kvstream::v1::KvChunk>> EncodeCache(
    const KvCache& cache, const codec::Plan& plan, const std::string& session_id,
    const ChunkingOptions& options, uint64_t first_seq, EncodeStats* stats) {
  const int L = cache.num_layers(), H = cache.kv_heads(), D = cache.head_dim();
  RETURN_IF_ERROR(plan.Validate(L));
  if (options.num_slots > cache.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot encode ", options.num_slots, " slots of a cache of ", cache.size()));
  }
  const int N = options.num_slots < 0 ? cache.size() : options.num_slots;
  if (N == 0) return absl::InvalidArgumentError("cache is empty: nothing to send");
  const int last = options.layer_end < 0 ? L : options.layer_end;
  if (options.layer_begin < 0 || options.layer_begin >= last || last > L) {
    return absl::InvalidArgumentError(absl::StrCat("layer range [", options.layer_begin, ", ", last,
                                                   ") is not within the cache's ", L, " layers"));
  }
  ASSIGN_OR_RETURN(const auto ranges, SlotRanges(options, N));
  const std::vector<LayerGroup> groups =
      GroupLayers(cache, plan, options.layer_begin, last, N, options.max_chunk_bytes);
  // Tier by tier (one range without tiers), each tier's layers whole before the next.
  std::vector<Block> blocks;
  for (const auto& [t0, t1] : ranges) {
    for (const LayerGroup& g : groups) {
      for (int lb = g.begin; lb < g.end; lb += g.layers_per_chunk) {
        for (int tb = t0; tb < t1; tb += g.tokens_per_chunk) {
          blocks.push_back({&g, lb, std::min(g.end, lb + g.layers_per_chunk), tb,
                            std::min(t1, tb + g.tokens_per_chunk)});
        }
      }
    }
  }
  std::vector<kvstream::v1::KvChunk> out(blocks.size());
  RETURN_IF_ERROR(EncodeBlocks(cache, plan, session_id, first_seq, blocks, options.threads, out));
  EncodeStats local;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const Block& b = blocks[i];
    local.bytes16 += 2ull * (b.le - b.lb) * H * (b.te - b.tb) * D * 2;
    local.raw_bytes += out[i].raw_bytes();
    local.wire_bytes += out[i].payload().size();
    local.message_bytes += out[i].ByteSizeLong();
    ++local.chunks;
  }
  if (stats != nullptr) *stats = local;
  return out;
}

CacheAssembler::CacheAssembler(const Model& model, std::string session_id,
                               std::vector<int32_t> positions, int next_position)
    : positions_(std::move(positions)) {
  const ModelConfig& c = model.config();
  Init(c.num_layers, c.num_kv_heads, c.head_dim, std::move(session_id), next_position);
  cache_ = model.NewCache(positions_, next_position);
}

CacheAssembler::CacheAssembler(int num_layers, int kv_heads, int head_dim, std::string session_id,
                               std::vector<int32_t> positions, int next_position)
    : positions_(std::move(positions)) {
  Init(num_layers, kv_heads, head_dim, std::move(session_id), next_position);
  cache_ = KvCache::Create(num_layers, kv_heads, head_dim, positions_, next_position);
}

void CacheAssembler::Init(int num_layers, int kv_heads, int head_dim, std::string session_id,
                          int next_position) {
  limits_.session_id = std::move(session_id);
  limits_.num_layers = num_layers;
  limits_.kv_heads = kv_heads;
  limits_.head_dim = head_dim;
  limits_.max_position = next_position;
  written_.assign(num_layers, std::vector<bool>(positions_.size(), false));
  total_ = static_cast<uint64_t>(num_layers) * positions_.size();
}

absl::Status CacheAssembler::Add(const kvstream::v1::KvChunk& chunk) {
  ASSIGN_OR_RETURN(const codec::ChunkMeta meta, Validate(chunk));
  return AddValidated(chunk, meta);
}

absl::StatusOr<codec::ChunkMeta> CacheAssembler::Validate(
    const kvstream::v1::KvChunk& chunk) const {
  return codec::ValidateChunk(chunk, limits_);
}

absl::StatusOr<codec::ChunkMeta> CacheAssembler::Validate(const kvstream::v1::KvChunk& chunk,
                                                          const codec::PayloadView& payload) const {
  return codec::ValidateChunk(chunk, payload, limits_);
}

absl::Status CacheAssembler::AddValidated(const kvstream::v1::KvChunk& chunk,
                                          const codec::ChunkMeta& meta) {
  return AddValidated(codec::PayloadView(chunk.payload()), meta);
}

absl::Status CacheAssembler::AddValidated(const codec::PayloadView& payload,
                                          const codec::ChunkMeta& meta) {
  RETURN_IF_ERROR(CheckCells(meta.seq, meta));
  RETURN_IF_ERROR(WriteChunk(payload, meta));
  const int tb = meta.token_begin;
  const int n = meta.num_tokens();
  for (int l = meta.layer_begin; l < meta.layer_end; ++l) {
    for (int t = tb; t < tb + n; ++t) written_[l][t] = true;
    covered_ += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// Lossless chunks in the cache's own dtype are copied as they are; int chunks decode
// straight into a bf16 cache on the CPU; the rest decode through float32, a layer at a
// time. Each way gives the cache the same bits.
absl::Status CacheAssembler::WriteChunk(const codec::PayloadView& view,
                                        const codec::ChunkMeta& meta) {
  const int tb = meta.token_begin;
  const int n = meta.num_tokens();
  const codec::DType own = cache_->is_bf16() ? codec::DType::kBF16 : codec::DType::kF32;
  if (meta.source_dtype == own) {
    const uint64_t tensor_bytes = codec::RawTensorBytes(meta, view.size());
    if (tensor_bytes > 0) return WriteRaw(view, meta, tensor_bytes);
  }
  ASSIGN_OR_RETURN(const codec::ChunkPayload payload, codec::ChunkPayload::Open(view, meta));
  if (own == codec::DType::kBF16 && payload.DecodesToBf16Directly() &&
      cache_->MutableRows(meta.layer_begin, tb, n).ok()) {
    for (int i = 0; i < meta.num_layers(); ++i) {
      ASSIGN_OR_RETURN(const KvCache::Rows rows, cache_->MutableRows(meta.layer_begin + i, tb, n));
      RETURN_IF_ERROR(payload.DecodeLayerToBf16(i, static_cast<uint8_t*>(rows.k),
                                                static_cast<uint8_t*>(rows.v), rows.head_stride));
    }
    return absl::OkStatus();
  }
  const size_t tensor = static_cast<size_t>(meta.kv_heads) * n * meta.head_dim;
  scratch_.resize(2 * tensor);
  for (int i = 0; i < meta.num_layers(); ++i) {
    RETURN_IF_ERROR(payload.DecodeLayer(i, scratch_.data(), scratch_.data() + tensor));
    RETURN_IF_ERROR(
        cache_->WriteLayer(meta.layer_begin + i, tb, n, scratch_.data(), scratch_.data() + tensor));
  }
  return absl::OkStatus();
}

// On the CPU each head's run of rows is copied from the payload's ranges straight into
// place; elsewhere a layer's K and V go through WriteLayerRaw, gathered first when they
// straddle two ranges.
absl::Status CacheAssembler::WriteRaw(const codec::PayloadView& payload,
                                      const codec::ChunkMeta& meta, uint64_t tensor_bytes) {
  const int tb = meta.token_begin;
  const int n = meta.num_tokens();
  const uint64_t run = tensor_bytes / meta.kv_heads;  // one head's rows
  const int64_t elt = cache_->is_bf16() ? 2 : 4;
  for (int i = 0; i < meta.num_layers(); ++i) {
    const uint64_t k_at = 2 * i * tensor_bytes, v_at = k_at + tensor_bytes;
    absl::StatusOr<KvCache::Rows> rows = cache_->MutableRows(meta.layer_begin + i, tb, n);
    if (!rows.ok()) {
      const uint8_t* k = payload.Get(k_at, tensor_bytes, &raw_k_);
      const uint8_t* v = payload.Get(v_at, tensor_bytes, &raw_v_);
      if (k == nullptr || v == nullptr) return PastPayload(meta, payload);
      RETURN_IF_ERROR(cache_->WriteLayerRaw(meta.layer_begin + i, tb, n, k, v));
      continue;
    }
    const int64_t stride = rows->head_stride * meta.head_dim * elt;
    for (int h = 0; h < meta.kv_heads; ++h) {
      if (!payload.CopyOut(k_at + h * run, run, static_cast<char*>(rows->k) + h * stride) ||
          !payload.CopyOut(v_at + h * run, run, static_cast<char*>(rows->v) + h * stride)) {
        return PastPayload(meta, payload);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CacheAssembler::CheckCells(uint64_t seq, const codec::ChunkMeta& meta) const {
  const int tb = meta.token_begin;
  const int n = meta.num_tokens();
  if (tb < 0 || static_cast<size_t>(tb) + n > positions_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", seq, ": tokens [", tb, ", ", tb + n,
                                                   ") outside the session's ", positions_.size(),
                                                   " slots"));
  }
  for (int l = meta.layer_begin; l < meta.layer_end; ++l) {
    for (int t = tb; t < tb + n; ++t) {
      if (written_[l][t]) {
        return absl::InvalidArgumentError(
            absl::StrCat("chunk ", seq, ": layer ", l, " slot ", t, " was already received"));
      }
    }
  }
  for (int i = 0; i < n; ++i) {
    if (meta.positions[i] != positions_[tb + i]) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", seq, ": slot ", tb + i,
                                                     " has position ", meta.positions[i],
                                                     ", the session expects ", positions_[tb + i]));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvCache>> CacheAssembler::Finish() {
  if (!complete()) {
    return absl::FailedPreconditionError(absl::StrCat("cache incomplete: ", cells_missing(), " of ",
                                                      total_, " (layer, slot) cells not received"));
  }
  if (cache_ == nullptr) return absl::FailedPreconditionError("cache already taken");
  return std::move(cache_);
}

int CacheAssembler::CompletePrefix() const {
  int n = 0;
  while (static_cast<size_t>(n) < positions_.size()) {
    bool all = true;
    for (const std::vector<bool>& layer : written_) all = all && layer[n];
    if (!all) break;
    ++n;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<KvCache>> CacheAssembler::FinishPrefix(int n) {
  if (cache_ == nullptr) return absl::FailedPreconditionError("cache already taken");
  if (n < 1 || n > CompletePrefix()) {
    return absl::FailedPreconditionError(
        absl::StrCat("a cache of the first ", n, " slots needs them in every layer; the first ",
                     CompletePrefix(), " of ", positions_.size(), " were received"));
  }
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return positions_[a] < positions_[b]; });
  RETURN_IF_ERROR(cache_->Reorder(order));
  return std::move(cache_);
}

}  // namespace kvstream::model
