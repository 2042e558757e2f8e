#include "common/codec/chunk.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/codec/crc32c.h"
#include "common/codec/entropy.h"
#include "common/codec/positions.h"
#include "common/codec/quantize.h"

namespace kvstream::codec {
namespace {

// Generous structural bounds that keep every size computation far from overflow.
constexpr int kMaxLayers = 1024;
constexpr int kMaxHeads = 1024;
constexpr int kMaxHeadDim = 4096;
constexpr int64_t kMaxTokens = 1 << 24;
constexpr int kMaxZstdLevel = 22;

TensorShape ShapeOf(const ChunkMeta& m) { return {m.kv_heads, m.num_tokens(), m.head_dim}; }

absl::Status CheckStructure(const ChunkMeta& m) {
  if (m.layer_begin < 0 || m.layer_end <= m.layer_begin || m.layer_end > kMaxLayers) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", m.seq, ": layer range [",
                                                   m.layer_begin, ", ", m.layer_end,
                                                   ") is empty or out of bounds"));
  }
  if (m.kv_heads < 1 || m.kv_heads > kMaxHeads || m.head_dim < 1 || m.head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", m.seq, ": kv_heads=", m.kv_heads,
                                                   " head_dim=", m.head_dim, " out of bounds"));
  }
  if (m.positions.empty() || static_cast<int64_t>(m.positions.size()) > kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", m.seq, ": ", m.positions.size(),
                                                   " tokens, expected 1..", kMaxTokens));
  }
  if (m.zstd_level < 0 || m.zstd_level > kMaxZstdLevel) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", m.seq, ": zstd level ", m.zstd_level,
                                                   ", expected 0..", kMaxZstdLevel));
  }
  RETURN_IF_ERROR(m.spec.k.Validate());
  RETURN_IF_ERROR(m.spec.v.Validate());
  return absl::OkStatus();
}

}  // namespace

void SpecToProto(const TensorSpec& spec, kvstream::v1::TensorSpec* out) {
  out->set_format(static_cast<kvstream::v1::Format>(spec.format));
  out->set_bits(static_cast<uint32_t>(spec.bits));
  out->set_axis(static_cast<kvstream::v1::Axis>(spec.axis));
  out->set_group_size(static_cast<uint32_t>(spec.group_size));
  out->set_transform(static_cast<kvstream::v1::Transform>(spec.transform));
  out->set_transform_param(static_cast<uint32_t>(spec.transform_param));
}

absl::StatusOr<TensorSpec> SpecFromProto(const kvstream::v1::TensorSpec& in) {
  if (!kvstream::v1::Format_IsValid(in.format()) || !kvstream::v1::Axis_IsValid(in.axis()) ||
      !kvstream::v1::Transform_IsValid(in.transform())) {
    return absl::InvalidArgumentError(absl::StrCat("spec: unknown enum value (format ", in.format(),
                                                   ", axis ", in.axis(), ", transform ",
                                                   in.transform(), ")"));
  }
  if (in.bits() > 64 || in.group_size() > (1u << 30) || in.transform_param() > (1u << 30)) {
    return absl::InvalidArgumentError("spec: field out of range");
  }
  TensorSpec spec;
  spec.format = static_cast<Format>(in.format());
  spec.bits = static_cast<int>(in.bits());
  spec.axis = static_cast<Axis>(in.axis());
  spec.group_size = static_cast<int>(in.group_size());
  spec.transform = static_cast<Transform>(in.transform());
  spec.transform_param = static_cast<int>(in.transform_param());
  RETURN_IF_ERROR(spec.Validate());
  return spec;
}

uint64_t ChunkRawBytes(const ChunkMeta& m) {
  const TensorShape s = ShapeOf(m);
  return static_cast<uint64_t>(m.num_layers()) * (EncodedTensorBytes(m.spec.k, s, m.source_dtype) +
                                                  EncodedTensorBytes(m.spec.v, s, m.source_dtype));
}

uint64_t ChunkBytes16(const ChunkMeta& m) {
  return static_cast<uint64_t>(m.num_layers()) * 2 * 2 * static_cast<uint64_t>(ShapeOf(m).numel());
}

absl::StatusOr<kvstream::v1::KvChunk> EncodeChunk(const ChunkMeta& m,
                                                  absl::Span<const LayerKv> layers) {
  RETURN_IF_ERROR(CheckStructure(m));
  if (static_cast<int>(layers.size()) != m.num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", m.seq, ": ", layers.size(),
                                                   " layer tensors for layer range [",
                                                   m.layer_begin, ", ", m.layer_end, ")"));
  }
  for (size_t i = 0; i < m.positions.size(); ++i) {
    if (m.positions[i] < 0 || (i > 0 && m.positions[i] <= m.positions[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", m.seq,
                       ": positions must be non-negative and strictly increasing (index ", i, ")"));
    }
  }
  const TensorShape s = ShapeOf(m);
  const uint64_t k_bytes = EncodedTensorBytes(m.spec.k, s, m.source_dtype);
  const uint64_t v_bytes = EncodedTensorBytes(m.spec.v, s, m.source_dtype);
  std::string raw(ChunkRawBytes(m), '\0');
  auto* out = reinterpret_cast<uint8_t*>(raw.data());
  for (const LayerKv& layer : layers) {
    RETURN_IF_ERROR(EncodeTensor(m.spec.k, s, m.source_dtype, layer.k, out));
    out += k_bytes;
    RETURN_IF_ERROR(EncodeTensor(m.spec.v, s, m.source_dtype, layer.v, out));
    out += v_bytes;
  }

  kvstream::v1::KvChunk chunk;
  chunk.set_session_id(m.session_id);
  chunk.set_seq(m.seq);
  chunk.set_layer_begin(static_cast<uint32_t>(m.layer_begin));
  chunk.set_layer_end(static_cast<uint32_t>(m.layer_end));
  chunk.set_token_begin(static_cast<uint32_t>(m.token_begin));
  chunk.set_num_tokens(static_cast<uint32_t>(m.num_tokens()));
  chunk.set_positions(EncodePositions(m.positions));
  chunk.set_kv_heads(static_cast<uint32_t>(m.kv_heads));
  chunk.set_head_dim(static_cast<uint32_t>(m.head_dim));
  chunk.set_source_dtype(static_cast<kvstream::v1::DType>(m.source_dtype));
  SpecToProto(m.spec.k, chunk.mutable_k_spec());
  SpecToProto(m.spec.v, chunk.mutable_v_spec());
  chunk.set_zstd_level(static_cast<uint32_t>(m.zstd_level));
  chunk.set_raw_bytes(raw.size());
  if (m.zstd_level > 0) {
    ASSIGN_OR_RETURN(std::string packed, ZstdCompress(raw, m.zstd_level));
    chunk.set_payload(std::move(packed));
  } else {
    chunk.set_payload(std::move(raw));
  }
  chunk.set_crc32c(Crc32c(chunk.payload().data(), chunk.payload().size()));
  return chunk;
}

absl::StatusOr<ChunkMeta> ValidateChunk(const kvstream::v1::KvChunk& c, const ChunkLimits& limits) {
  return ValidateChunk(c, PayloadView(c.payload()), limits);
}

absl::StatusOr<ChunkMeta> ValidateChunk(const kvstream::v1::KvChunk& c, const PayloadView& payload,
                                        const ChunkLimits& limits) {
  const std::string where = absl::StrCat("chunk ", c.seq(), ": ");
  auto invalid = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(where, parts...));
  };
  if (!limits.session_id.empty() && c.session_id() != limits.session_id) {
    return invalid("session '", c.session_id(), "', expected '", limits.session_id, "'");
  }
  if (c.layer_end() <= c.layer_begin() ||
      (limits.num_layers > 0 && c.layer_end() > static_cast<uint32_t>(limits.num_layers)) ||
      c.layer_end() > static_cast<uint32_t>(kMaxLayers)) {
    return invalid("layer range [", c.layer_begin(), ", ", c.layer_end(),
                   ") is empty or beyond the model's ", limits.num_layers, " layers");
  }
  if ((limits.kv_heads > 0 && c.kv_heads() != static_cast<uint32_t>(limits.kv_heads)) ||
      c.kv_heads() < 1 || c.kv_heads() > static_cast<uint32_t>(kMaxHeads)) {
    return invalid("kv_heads ", c.kv_heads(), ", expected ", limits.kv_heads);
  }
  if ((limits.head_dim > 0 && c.head_dim() != static_cast<uint32_t>(limits.head_dim)) ||
      c.head_dim() < 1 || c.head_dim() > static_cast<uint32_t>(kMaxHeadDim)) {
    return invalid("head_dim ", c.head_dim(), ", expected ", limits.head_dim);
  }
  const int64_t max_tokens = limits.max_position > 0 ? limits.max_position : kMaxTokens;
  if (c.num_tokens() < 1 || c.num_tokens() > static_cast<uint64_t>(max_tokens)) {
    return invalid("num_tokens ", c.num_tokens(), ", expected 1..", max_tokens);
  }
  if (!kvstream::v1::DType_IsValid(c.source_dtype())) {
    return invalid("unknown source dtype ", c.source_dtype());
  }
  if (c.zstd_level() > static_cast<uint32_t>(kMaxZstdLevel)) {
    return invalid("zstd level ", c.zstd_level(), ", expected 0..", kMaxZstdLevel);
  }
  auto k_spec = SpecFromProto(c.k_spec());
  if (!k_spec.ok()) return invalid("k_spec: ", k_spec.status().message());
  auto v_spec = SpecFromProto(c.v_spec());
  if (!v_spec.ok()) return invalid("v_spec: ", v_spec.status().message());

  ChunkMeta m;
  m.session_id = c.session_id();
  m.seq = c.seq();
  m.layer_begin = static_cast<int>(c.layer_begin());
  m.layer_end = static_cast<int>(c.layer_end());
  m.token_begin = static_cast<int>(c.token_begin());
  m.kv_heads = static_cast<int>(c.kv_heads());
  m.head_dim = static_cast<int>(c.head_dim());
  m.source_dtype = static_cast<DType>(c.source_dtype());
  m.spec = {*k_spec, *v_spec};
  m.zstd_level = static_cast<int>(c.zstd_level());
  m.positions.resize(c.num_tokens());  // sizes only; filled below

  const uint64_t expected_raw = ChunkRawBytes(m);
  if (c.raw_bytes() != expected_raw) {
    return invalid("raw_bytes ", c.raw_bytes(), ", spec ", m.spec.k.ToString(), "/",
                   m.spec.v.ToString(), " over ", m.num_layers(), " layers x ", m.kv_heads,
                   " heads x ", c.num_tokens(), " tokens x ", m.head_dim, " needs ", expected_raw);
  }
  const uint64_t numel_total =
      static_cast<uint64_t>(m.num_layers()) * 2 * m.kv_heads * c.num_tokens() * m.head_dim;
  const uint64_t decoded_bytes = std::max<uint64_t>(numel_total * sizeof(float), expected_raw);
  if (decoded_bytes > limits.max_decoded_bytes) {
    return invalid("decodes to ", decoded_bytes, " bytes, above the limit of ",
                   limits.max_decoded_bytes);
  }
  const uint32_t crc = payload.Crc32c();
  if (crc != c.crc32c()) {
    return absl::DataLossError(absl::StrCat(where, "CRC32C of the ", payload.size(),
                                            "-byte payload is ", crc, ", chunk says ", c.crc32c()));
  }
  auto positions = DecodePositions(c.positions(), c.num_tokens(),
                                   limits.max_position > 0 ? limits.max_position : kMaxTokens);
  if (!positions.ok()) return invalid(positions.status().message());
  m.positions = *std::move(positions);

  return m;
}

size_t ChunkNumel(const ChunkMeta& m) {
  return static_cast<size_t>(m.num_layers()) * 2 * m.kv_heads * m.num_tokens() * m.head_dim;
}

absl::StatusOr<ChunkPayload> ChunkPayload::Open(const kvstream::v1::KvChunk& c,
                                                const ChunkMeta& m) {
  return Open(PayloadView(c.payload()), m);
}

absl::StatusOr<ChunkPayload> ChunkPayload::Open(const PayloadView& payload, const ChunkMeta& m) {
  ChunkPayload p;
  p.meta_ = &m;
  const uint64_t expected_raw = ChunkRawBytes(m);  // raw_bytes, as ValidateChunk checked
  p.raw_ = payload;
  if (m.zstd_level > 0) {
    std::string flat;  // the frame, when it came in several ranges
    const auto* frame = reinterpret_cast<const char*>(payload.Get(0, payload.size(), &flat));
    auto d = ZstdDecompress(absl::string_view(frame, payload.size()), expected_raw);
    if (!d.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", m.seq, ": ", d.status().message()));
    }
    p.decompressed_ = std::make_shared<std::string>(*std::move(d));
    p.raw_ = PayloadView(*p.decompressed_);
  } else if (p.raw_.size() != expected_raw) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", m.seq, ": payload ", p.raw_.size(),
                                                   " bytes, spec needs ", expected_raw));
  }
  const TensorShape s = ShapeOf(m);
  p.k_bytes_ = EncodedTensorBytes(m.spec.k, s, m.source_dtype);
  p.v_bytes_ = EncodedTensorBytes(m.spec.v, s, m.source_dtype);
  return p;
}

absl::StatusOr<const uint8_t*> ChunkPayload::Tensor(int i, bool v) const {
  if (i < 0 || i >= meta_->num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", meta_->seq, ": no layer ", i, " in its ", meta_->num_layers()));
  }
  const uint64_t at = i * (k_bytes_ + v_bytes_) + (v ? k_bytes_ : 0);
  const uint8_t* p = raw_.Get(at, v ? v_bytes_ : k_bytes_, &scratch_);
  if (p == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk ", meta_->seq, ": layer ", i, " runs past the payload's ", raw_.size(), " bytes"));
  }
  return p;
}

absl::Status ChunkPayload::DecodeLayer(int i, float* k, float* v) const {
  const ChunkMeta& m = *meta_;
  const TensorShape s = ShapeOf(m);
  ASSIGN_OR_RETURN(const uint8_t* in_k, Tensor(i, false));
  RETURN_IF_ERROR(DecodeTensor(m.spec.k, s, m.source_dtype, in_k, k_bytes_, k));
  ASSIGN_OR_RETURN(const uint8_t* in_v, Tensor(i, true));
  return DecodeTensor(m.spec.v, s, m.source_dtype, in_v, v_bytes_, v);
}

bool ChunkPayload::DecodesToBf16Directly() const {
  return codec::DecodesToBf16Directly(meta_->spec.k) && codec::DecodesToBf16Directly(meta_->spec.v);
}

absl::Status ChunkPayload::DecodeLayerToBf16(int i, uint8_t* k, uint8_t* v,
                                             int64_t head_stride) const {
  const ChunkMeta& m = *meta_;
  const TensorShape s = ShapeOf(m);
  ASSIGN_OR_RETURN(const uint8_t* in_k, Tensor(i, false));
  RETURN_IF_ERROR(DecodeTensorToBf16(m.spec.k, s, m.source_dtype, in_k, k_bytes_, k, head_stride));
  ASSIGN_OR_RETURN(const uint8_t* in_v, Tensor(i, true));
  return DecodeTensorToBf16(m.spec.v, s, m.source_dtype, in_v, v_bytes_, v, head_stride);
}

absl::Status DecodeValidated(const kvstream::v1::KvChunk& c, const ChunkMeta& m,
                             absl::Span<float> out) {
  ASSIGN_OR_RETURN(const ChunkPayload payload, ChunkPayload::Open(c, m));
  const size_t tensor = static_cast<size_t>(ShapeOf(m).numel());
  for (int l = 0; l < m.num_layers(); ++l) {
    RETURN_IF_ERROR(
        payload.DecodeLayer(l, out.data() + (2 * l) * tensor, out.data() + (2 * l + 1) * tensor));
  }
  return absl::OkStatus();
}

uint64_t RawTensorBytes(const ChunkMeta& m, uint64_t payload_size) {
  const bool raw = m.spec.k.lossless() && m.spec.v.lossless();
  if (!raw || m.zstd_level > 0 || payload_size != ChunkRawBytes(m)) return 0;
  return static_cast<uint64_t>(ShapeOf(m).numel()) * DTypeBytes(m.source_dtype);
}

absl::Status DecodeChunkInto(const kvstream::v1::KvChunk& c, const ChunkLimits& limits,
                             ChunkMeta* meta, absl::Span<float> out) {
  ASSIGN_OR_RETURN(*meta, ValidateChunk(c, limits));
  if (out.size() != ChunkNumel(*meta)) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", c.seq(), ": output holds ", out.size(),
                                                   " floats, the chunk decodes to ",
                                                   ChunkNumel(*meta)));
  }
  return DecodeValidated(c, *meta, out);
}

absl::Status DecodeChunkInto(const kvstream::v1::KvChunk& c, const ChunkLimits& limits,
                             ChunkMeta* meta, std::vector<float>* out) {
  ASSIGN_OR_RETURN(*meta, ValidateChunk(c, limits));
  out->resize(ChunkNumel(*meta));
  return DecodeValidated(c, *meta, absl::MakeSpan(*out));
}

absl::StatusOr<DecodedChunk> DecodeChunk(const kvstream::v1::KvChunk& c,
                                         const ChunkLimits& limits) {
  DecodedChunk out;
  ASSIGN_OR_RETURN(out.meta, ValidateChunk(c, limits));
  out.kv.resize(ChunkNumel(out.meta));
  RETURN_IF_ERROR(DecodeValidated(c, out.meta, absl::MakeSpan(out.kv)));
  return out;
}

}  // namespace kvstream::codec
