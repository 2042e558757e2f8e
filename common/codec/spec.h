// Compression specs: how one tensor kind is encoded (TensorSpec), the pair used for a
// layer (LayerSpec), and a per-layer plan with its compact textual form (Plan).
//
// Plan strings, used by the CLI, config files and AskRequest.policy:
//
//   plan      := item (',' item)*
//   item      := spec                          default for K and V
//              | ('k' | 'v') '=' spec          default for one kind
//              | 'L' range ['.' ('k'|'v')] '=' spec
//                                              override for layers (later items win)
//              | 'zstd=' (LEVEL | 'off')       entropy stage (default off)
//              | 'tiers=' (N | 'off')          progressive: N importance tiers (2..64)
//   range     := N | N '-' M                   inclusive, 0-based
//   spec      := format ['/' axis] ['+' transform]
//   format    := 'raw'                         the cache's own dtype, bit-exact
//              | 'f16' | 'bf16'                16-bit float, round to nearest even
//              | 'int' B                       B in 1..8, uniform asymmetric
//   axis      := 'tok'                         per token (default for int)
//              | 'ch'                          per channel, over the chunk's tokens
//              | 'g' G                         groups of G along head_dim
//   transform := 'ad' G | 'sd' | 'svd' R       anchor delta / sequential delta / rank-R SVD
//
// Examples: "raw"; "int8,zstd=3"; "k=int4/ch,v=int4/tok,L0=f16,zstd=3" (layer 0 at 16 bit,
// the rest INT4 with K per channel); "int4/g32,L0-1.k=int8"; "int4,tiers=8" (sent most
// important tokens first, docs/codec.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::codec {

enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };
enum class Format : uint8_t { kRaw = 0, kF16 = 1, kBF16 = 2, kInt = 3 };
enum class Axis : uint8_t { kPerToken = 0, kPerChannel = 1, kGroup = 2 };
enum class Transform : uint8_t { kNone = 0, kAnchorDelta = 1, kSeqDelta = 2, kSvd = 3 };

inline int DTypeBytes(DType d) { return d == DType::kF32 ? 4 : 2; }
absl::string_view DTypeName(DType d);

struct TensorSpec {
  Format format = Format::kRaw;
  int bits = 0;                 // kInt: 1..8
  Axis axis = Axis::kPerToken;  // kInt only
  int group_size = 0;           // kGroup only
  Transform transform = Transform::kNone;
  int transform_param = 0;  // kAnchorDelta: tokens per group; kSvd: rank

  static TensorSpec Raw() { return {}; }
  static TensorSpec F16() { return {Format::kF16}; }
  static TensorSpec Int(int bits, Axis axis = Axis::kPerToken, int group_size = 0) {
    return {Format::kInt, bits, axis, group_size};
  }

  // Checks field ranges; the message names the bad field and its value.
  absl::Status Validate() const;
  // Canonical textual form ("int4/ch", "f16", "int6/g32+ad8").
  std::string ToString() const;
  bool lossless() const { return format == Format::kRaw && transform == Transform::kNone; }
  friend bool operator==(const TensorSpec& a, const TensorSpec& b);
  friend bool operator!=(const TensorSpec& a, const TensorSpec& b) { return !(a == b); }
};

struct LayerSpec {
  TensorSpec k;
  TensorSpec v;
  friend bool operator==(const LayerSpec& a, const LayerSpec& b) {
    return a.k == b.k && a.v == b.v;
  }
  friend bool operator!=(const LayerSpec& a, const LayerSpec& b) { return !(a == b); }
};

inline constexpr int kMaxTiers = 64;

struct Plan {
  struct Override {
    int first = 0;  // inclusive layer range
    int last = 0;
    std::optional<TensorSpec> k;
    std::optional<TensorSpec> v;
  };

  LayerSpec base;
  std::vector<Override> overrides;
  int zstd_level = 0;  // 0: no entropy stage
  // Progressive sending ("tiers=N", 2..kMaxTiers; 0: off): the kept tokens go in N
  // importance tiers, most important first, each tier's chunks whole before the next,
  // so that a transfer cut short (a TTFT target, an outage) still leaves the receiver
  // the most important tokens to answer from. The tokens outside the context (question,
  // template) are in the first tier; the context tokens the selector ranks are split
  // evenly over the N tiers.
  int tiers = 0;

  // The spec layer `layer` is encoded with: base, then every override covering it in order.
  LayerSpec ForLayer(int layer) const;
  // Checks that every override names layers of a model with `num_layers` layers, and the
  // tiers count.
  absl::Status Validate(int num_layers) const;
  // Canonical plan string; Parse(ToString()) gives back an equal plan.
  std::string ToString() const;
  bool lossless(int num_layers) const;
};

absl::StatusOr<TensorSpec> ParseTensorSpec(absl::string_view text);
absl::StatusOr<Plan> ParsePlan(absl::string_view text);

}  // namespace kvstream::codec
