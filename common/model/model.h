// The model runtime's public surface: a Qwen2/Llama-family decoder running in libtorch,
// behind an interface that does not include torch (pimpl), so daemons and tools compile
// without it.
//
// Cache convention (shared with the wire): per layer, K after RoPE and V, each
// [kv_heads, slots, head_dim], plus each slot's original position id. A compacted cache
// (only kept positions) keeps those ids, and the next token continues at the original
// prompt length (next_position), so decoding from it needs no re-rotation.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/model/config.h"
#include "common/select/select.h"

namespace kvstream::model {

struct RuntimeOptions {
  std::string device = "cpu";  // "cpu", "cuda" or "cuda:N"
  std::string dtype = "f32";   // compute and cache dtype: "f32" or "bf16"
};

// Sets libtorch's intra-op thread count for the whole process (0: every core) and
// returns the count now in effect. A process calls it once at start-up, before any
// model work: it is process-wide state, so Model::Load does not touch it.
int SetComputeThreads(int threads);
// The intra-op thread count in effect.
int ComputeThreads();

class Model;

class KvCache {
 public:
  // An empty-valued float32 CPU cache of `positions.size()` slots, to be filled by
  // WriteLayer: for a receiver that holds no model of this shape (projected mode
  // rebuilds the sender's cache before mapping it into its own model's).
  static std::unique_ptr<KvCache> Create(int num_layers, int kv_heads, int head_dim,
                                         const std::vector<int32_t>& positions, int next_position);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  int num_layers() const;
  int kv_heads() const;
  int head_dim() const;
  int size() const;  // slots
  bool is_bf16() const;
  const std::vector<int32_t>& positions() const;  // original position id per slot
  int next_position() const;                      // position id of the next token
  void set_next_position(int p);

  // Copies layer `layer`'s K and V at slots [begin, end) into float32 buffers
  // [kv_heads, end - begin, head_dim].
  absl::Status ExportLayer(int layer, int begin, int end, float* k, float* v) const;
  // The same slots in the cache's own dtype (f32: 4 bytes, bf16: 2 bytes per element),
  // for lossless transfer. A CPU cache is copied without torch kernels, so this may run
  // on threads of the caller's own (chunks are encoded on several).
  absl::Status ExportLayerRaw(int layer, int begin, int end, void* k, void* v) const;
  // Overwrites slots [begin, begin + n) of `layer` from float32 [kv_heads, n, head_dim].
  absl::Status WriteLayer(int layer, int begin, int n, const float* k, const float* v);
  // The same from buffers in the cache's own dtype (as ExportLayerRaw gives them): a
  // copy with no conversion, for lossless chunks.
  absl::Status WriteLayerRaw(int layer, int begin, int n, const void* k, const void* v);
  // Slots [begin, begin + n) of `layer` for a writer that fills them in place, in the
  // cache's dtype (is_bf16: 2 bytes an element, else 4; a decoder writing bf16 straight
  // in checks is_bf16 first): K and V of head h, slot begin + t, start (h * head_stride +
  // t) * head_dim elements from `k` and `v`. A CPU cache only (FailedPrecondition
  // elsewhere: write through WriteLayer).
  struct Rows {
    void* k;
    void* v;
    int64_t head_stride;
  };
  absl::StatusOr<Rows> MutableRows(int layer, int begin, int n);
  // Keeps only `slots` (strictly increasing indices): eviction after a full prefill.
  absl::Status Compact(const std::vector<int32_t>& slots);
  // Keeps only `slots` (distinct indices, in any order), in that order; replaces a layer at
  // a time, so it needs about one layer's memory beside the cache.
  absl::Status Reorder(const std::vector<int32_t>& slots);
  // A new cache holding `slots` of this one, in that order (distinct indices, in any
  // order: a progressive sender orders its slots by importance); this cache is unchanged.
  absl::StatusOr<std::unique_ptr<KvCache>> Copy(const std::vector<int32_t>& slots) const;
  // Bytes held by the tensors.
  uint64_t bytes() const;

 private:
  friend class Model;
  friend class ForwardPass;  // model.cc: a forward pass appends its keys and values
  struct Impl;
  // Keeps `slots` (checked by the caller), in that order.
  absl::Status Gather(const std::vector<int32_t>& slots);
  // INVALID_ARGUMENT unless `slots` are distinct slots of this cache.
  absl::Status CheckDistinct(const std::vector<int32_t>& slots, const char* what) const;
  explicit KvCache(std::unique_ptr<Impl> impl);
  // `impl` grown to `positions.size()` slots (values unset) with those positions.
  static std::unique_ptr<KvCache> Sized(std::unique_ptr<Impl> impl,
                                        const std::vector<int32_t>& positions, int next_position);
  std::unique_ptr<Impl> impl_;
};

struct PrefillOptions {
  // Construction-time masking: tokens with keep_mask[i] == 0 are invisible to every later
  // query while the cache is built, and are not stored. Empty: keep everything.
  std::vector<uint8_t> keep_mask;
  // Collect attention statistics for the selectors over `spans`.
  bool collect_stats = false;
  select::PromptSpans spans;
  int window = 32;        // SnapKV observation window (last `window` query rows)
  int query_block = 256;  // queries per attention block: memory ~ heads x block x tokens
  // Keep only the first `cache_tokens` tokens' K/V (the rest are run for their statistics
  // rows and logits); -1: all. Not with a keep mask.
  int cache_tokens = -1;
  // Called between layers and between query blocks (may be null): a non-OK status stops
  // the prefill within one block's time and is returned (cancelled or late requests).
  std::function<absl::Status()> interrupt;
  // Called on the prefill's thread after each layer's keys and values are in `cache`
  // (may be null; not with a keep mask): the cache already has every slot and position
  // of the prompt (before `cache_tokens` trims it), and layers 0..`layer` their values.
  // A sender encodes and sends a layer with it while the next is computed; a non-OK
  // status stops the prefill and is returned.
  std::function<absl::Status(int layer, const KvCache& cache)> on_layer;
};

struct PrefillResult {
  std::unique_ptr<KvCache> cache;
  std::vector<float> last_logits;  // [vocab] for the last prompt token
  select::AttentionStats stats;    // filled when collect_stats
};

// Prefills a whole prompt (`spans` over all of it; num_tokens is set here) for selection:
// the statistics cover every query row, the last prompt token's included (Q2C's
// question-through-last-row sums, SnapKV's window ending at the true last token), and
// the cache holds every token but the last (next position: the last token's), which the
// answering side feeds first.
absl::StatusOr<PrefillResult> PrefillForSelection(
    Model& model, absl::Span<const int32_t> tokens, const select::PromptSpans& spans,
    int window = 32, std::function<absl::Status()> interrupt = nullptr);

// Thread safety: a Model's weights are read-only after Load, and Prefill, Extend and
// FullLogits keep their state in the cache they are given, so several threads may run
// them at once on different caches (the daemons' model workers do; torch's intra-op
// threads are set once for the process, by SetComputeThreads). A KvCache is used by one thread at a
// time.
class Model {
 public:
  // Loads an HF directory: config.json, model.safetensors (or a sharded index), and
  // tokenizer.json (hashed into the fingerprint when present).
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir,
                                                     const RuntimeOptions& options = {});
  ~Model();

  const ModelConfig& config() const;
  // "<arch>-<16 hex digits>": architecture, dimensions, the safetensors headers, a sample
  // of the weight bytes and tokenizer.json. Edge and cloud compare it before kv mode.
  const std::string& fingerprint() const;
  const std::string& dir() const;
  bool is_bf16() const;

  // Prefills `tokens` at positions 0..n-1 into a new cache.
  absl::StatusOr<PrefillResult> Prefill(absl::Span<const int32_t> tokens,
                                        const PrefillOptions& options = {});
  // Runs `tokens` at `positions` (each greater than every cached position) through the
  // model, appending them to `cache`; returns the logits of the last `rows` of them
  // ([rows * vocab], row major; rows in [1, tokens.size()]).
  absl::StatusOr<std::vector<float>> Extend(KvCache& cache, absl::Span<const int32_t> tokens,
                                            absl::Span<const int32_t> positions, int rows = 1);
  // An empty-valued cache with `positions.size()` slots, to be filled by WriteLayer.
  std::unique_ptr<KvCache> NewCache(const std::vector<int32_t>& positions, int next_position) const;
  // Logits for every position of `tokens` from one full causal pass, no cache: the
  // reference the cached paths are tested against. [n * vocab], row major.
  absl::StatusOr<std::vector<float>> FullLogits(absl::Span<const int32_t> tokens);

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstream::model
