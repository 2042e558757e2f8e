#include "common/codec/chunk.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "common/codec/crc32c.h"
#include "common/codec/entropy.h"
#include "common/codec/positions.h"

namespace kvstream::codec {
namespace {

constexpr int kLayers = 3, kHeads = 2, kDim = 16;

struct Fixture {
  ChunkMeta meta;
  std::vector<std::vector<float>> k, v;
  std::vector<LayerKv> views;
};

Fixture MakeChunk(const std::string& plan_text,
                  std::vector<int32_t> positions = {3, 4, 9, 10, 31}) {
  Fixture f;
  auto plan = ParsePlan(plan_text);
  EXPECT_TRUE(plan.ok()) << plan.status();
  f.meta.session_id = "s-1";
  f.meta.seq = 7;
  f.meta.layer_begin = 0;
  f.meta.layer_end = kLayers;
  f.meta.positions = std::move(positions);
  f.meta.kv_heads = kHeads;
  f.meta.head_dim = kDim;
  f.meta.spec = plan->ForLayer(0);
  f.meta.zstd_level = plan->zstd_level;
  std::mt19937 rng(42);
  std::normal_distribution<float> n;
  const size_t numel = static_cast<size_t>(kHeads) * f.meta.num_tokens() * kDim;
  for (int l = 0; l < kLayers; ++l) {
    f.k.emplace_back(numel);
    f.v.emplace_back(numel);
    for (auto& x : f.k.back()) x = n(rng);
    for (auto& x : f.v.back()) x = n(rng) * 0.3f;
  }
  for (int l = 0; l < kLayers; ++l) f.views.push_back({f.k[l].data(), f.v[l].data()});
  return f;
}

ChunkLimits Limits() {
  ChunkLimits lim;
  lim.session_id = "s-1";
  lim.num_layers = kLayers;
  lim.kv_heads = kHeads;
  lim.head_dim = kDim;
  lim.max_position = 64;
  return lim;
}

TEST(ChunkTest, RoundTripsEverySpecFamily) {
  for (const char* plan : {"raw", "f16", "int8", "int4/ch,zstd=3", "k=int4/ch,v=int2/g8",
                           "int3,zstd=1", "bf16,zstd=19", "int8+ad2", "f16+svd4"}) {
    SCOPED_TRACE(plan);
    Fixture f = MakeChunk(plan);
    auto chunk = EncodeChunk(f.meta, f.views);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    EXPECT_EQ(chunk->raw_bytes(), ChunkRawBytes(f.meta));
    if (f.meta.zstd_level == 0) {
      EXPECT_EQ(chunk->payload().size(), chunk->raw_bytes());
    }
    auto decoded = DecodeChunk(*chunk, Limits());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->meta.positions, f.meta.positions);
    EXPECT_EQ(decoded->meta.spec, f.meta.spec);
    EXPECT_EQ(decoded->meta.seq, 7u);
    double max_err = 0;
    for (int l = 0; l < kLayers; ++l) {
      for (size_t i = 0; i < f.k[l].size(); ++i) {
        max_err = std::max<double>(max_err, std::fabs(decoded->k(l)[i] - f.k[l][i]));
        max_err = std::max<double>(max_err, std::fabs(decoded->v(l)[i] - f.v[l][i]));
      }
    }
    if (std::string(plan) == "raw") {
      EXPECT_EQ(max_err, 0.0);
    }
    EXPECT_LT(max_err, 2.5);  // int2 on N(0,1) data is the loosest case here
  }
}

TEST(ChunkTest, Bytes16IsTheSixteenBitSizeOfTheChunk) {
  Fixture f = MakeChunk("int4");
  EXPECT_EQ(ChunkBytes16(f.meta), 2u * 2 * kLayers * kHeads * 5 * kDim);
}

TEST(ChunkTest, EncoderRejectsBadInput) {
  Fixture f = MakeChunk("int4");
  ChunkMeta m = f.meta;
  m.positions = {3, 3, 4, 5, 6};
  EXPECT_EQ(EncodeChunk(m, f.views).status().code(), absl::StatusCode::kInvalidArgument);
  m = f.meta;
  m.layer_end = 2;
  EXPECT_NE(
      EncodeChunk(m, f.views).status().message().find("3 layer tensors for layer range [0, 2)"),
      std::string::npos);
}

struct Corruption {
  const char* name;
  std::function<void(v1::KvChunk*)> mutate;
  bool fix_crc;
  absl::StatusCode code;
  const char* needle;
};

TEST(ChunkTest, DecoderRejectsEveryCorruptedField) {
  const std::vector<Corruption> table = {
      {"flip crc", [](v1::KvChunk* c) { c->set_crc32c(c->crc32c() ^ 1); }, false,
       absl::StatusCode::kDataLoss, "CRC32C"},
      {"flip payload byte", [](v1::KvChunk* c) { (*c->mutable_payload())[5] ^= 0x10; }, false,
       absl::StatusCode::kDataLoss, "CRC32C"},
      {"truncated payload",
       [](v1::KvChunk* c) { c->mutable_payload()->resize(c->payload().size() - 3); }, true,
       absl::StatusCode::kInvalidArgument, "payload"},
      {"extra payload", [](v1::KvChunk* c) { c->mutable_payload()->append("xyz"); }, true,
       absl::StatusCode::kInvalidArgument, "payload"},
      {"raw_bytes", [](v1::KvChunk* c) { c->set_raw_bytes(c->raw_bytes() + 1); }, false,
       absl::StatusCode::kInvalidArgument, "raw_bytes"},
      {"kv_heads", [](v1::KvChunk* c) { c->set_kv_heads(4); }, false,
       absl::StatusCode::kInvalidArgument, "kv_heads 4, expected 2"},
      {"head_dim", [](v1::KvChunk* c) { c->set_head_dim(0); }, false,
       absl::StatusCode::kInvalidArgument, "head_dim 0, expected 16"},
      {"layers beyond model", [](v1::KvChunk* c) { c->set_layer_end(9); }, false,
       absl::StatusCode::kInvalidArgument, "layer range [0, 9)"},
      {"empty layer range", [](v1::KvChunk* c) { c->set_layer_begin(3); }, false,
       absl::StatusCode::kInvalidArgument, "layer range [3, 3)"},
      {"zero tokens", [](v1::KvChunk* c) { c->set_num_tokens(0); }, false,
       absl::StatusCode::kInvalidArgument, "num_tokens 0"},
      {"more tokens than positions", [](v1::KvChunk* c) { c->set_num_tokens(6); }, false,
       absl::StatusCode::kInvalidArgument, "raw_bytes"},
      {"position gap 0",
       [](v1::KvChunk* c) {
         c->set_positions(EncodePositions({3, 4, 9, 10, 31}).replace(2, 1, "\x00", 1));
       },
       false, absl::StatusCode::kInvalidArgument, "gap 2 is 0"},
      {"position out of range",
       [](v1::KvChunk* c) {
         c->set_positions(EncodePositions({3, 4, 9, 10, 64}));
       },
       false, absl::StatusCode::kInvalidArgument, "position 4 is 64, expected < 64"},
      {"trailing position bytes", [](v1::KvChunk* c) { c->mutable_positions()->push_back(1); },
       false, absl::StatusCode::kInvalidArgument, "trailing"},
      {"truncated varint", [](v1::KvChunk* c) { c->set_positions("\x01\x01\x01\x01\x80"); }, false,
       absl::StatusCode::kInvalidArgument, "truncated"},
      {"unknown format",
       [](v1::KvChunk* c) { c->mutable_k_spec()->set_format(static_cast<v1::Format>(9)); }, false,
       absl::StatusCode::kInvalidArgument, "k_spec: spec: unknown enum"},
      {"bits 9", [](v1::KvChunk* c) { c->mutable_v_spec()->set_bits(9); }, false,
       absl::StatusCode::kInvalidArgument, "v_spec: spec: int bits must be 1..8, found 9"},
      {"unknown dtype", [](v1::KvChunk* c) { c->set_source_dtype(static_cast<v1::DType>(7)); },
       false, absl::StatusCode::kInvalidArgument, "unknown source dtype"},
      {"zstd level 23", [](v1::KvChunk* c) { c->set_zstd_level(23); }, false,
       absl::StatusCode::kInvalidArgument, "zstd level 23"},
      {"payload claims zstd", [](v1::KvChunk* c) { c->set_zstd_level(3); }, false,
       absl::StatusCode::kInvalidArgument, "zstd"},
      {"wrong session", [](v1::KvChunk* c) { c->set_session_id("other"); }, false,
       absl::StatusCode::kInvalidArgument, "session 'other', expected 's-1'"},
  };
  Fixture f = MakeChunk("int4");
  auto good = EncodeChunk(f.meta, f.views);
  ASSERT_TRUE(good.ok());
  for (const Corruption& c : table) {
    SCOPED_TRACE(c.name);
    v1::KvChunk chunk = *good;
    c.mutate(&chunk);
    if (c.fix_crc) chunk.set_crc32c(Crc32c(chunk.payload().data(), chunk.payload().size()));
    auto r = DecodeChunk(chunk, Limits());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos) << r.status().message();
  }
}

TEST(ChunkTest, DecoderRejectsCorruptZstdFrames) {
  Fixture f = MakeChunk("int8,zstd=3");
  auto good = EncodeChunk(f.meta, f.views);
  ASSERT_TRUE(good.ok());
  v1::KvChunk chunk = *good;
  chunk.mutable_payload()->resize(chunk.payload().size() / 2);
  chunk.set_crc32c(Crc32c(chunk.payload().data(), chunk.payload().size()));
  auto r = DecodeChunk(chunk, Limits());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("zstd"), std::string::npos) << r.status();

  // A frame that declares a different size than the spec needs is refused before it is
  // decompressed (no decompression bombs).
  auto frame = ZstdCompress(std::string(100000, 'a'), 3);
  ASSERT_TRUE(frame.ok());
  chunk = *good;
  chunk.set_payload(*frame);
  chunk.set_crc32c(Crc32c(chunk.payload().data(), chunk.payload().size()));
  r = DecodeChunk(chunk, Limits());
  EXPECT_NE(r.status().message().find("frame declares 100000 bytes"), std::string::npos)
      << r.status();
}

TEST(ChunkTest, DecoderEnforcesTheDecodedSizeLimit) {
  Fixture f = MakeChunk("int2");
  auto good = EncodeChunk(f.meta, f.views);
  ChunkLimits lim = Limits();
  lim.max_decoded_bytes = 1000;
  auto r = DecodeChunk(*good, lim);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("above the limit of 1000"), std::string::npos) << r.status();
}

// A payload held in ranges (as the cloud holds one in the slices gRPC received it in)
// validates and decodes to the same floats and bf16 rows as the same chunk in one string,
// however it is cut: tensors inside one range are read in place, those across two are
// gathered first.
TEST(ChunkTest, DecodesThePayloadFromRangesAsFromOneString) {
  for (const char* plan : {"raw", "int8", "int4", "int4/ch,zstd=3", "k=int4/ch,v=int2/g8"}) {
    Fixture f = MakeChunk(plan);
    auto chunk = EncodeChunk(f.meta, f.views);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    auto want = DecodeChunk(*chunk, Limits());
    ASSERT_TRUE(want.ok()) << want.status();
    const std::string payload = chunk->payload();
    v1::KvChunk header = *chunk;
    header.clear_payload();  // the held payload is the only one read
    for (size_t cut : {1, 5, 64, 100, 1000}) {
      SCOPED_TRACE(std::string(plan) + ", ranges of " + std::to_string(cut));
      std::vector<absl::string_view> parts;
      for (size_t at = 0; at < payload.size(); at += cut) {
        parts.push_back(absl::string_view(payload).substr(at, cut));
      }
      const PayloadView view(parts);
      auto meta = ValidateChunk(header, view, Limits());
      ASSERT_TRUE(meta.ok()) << meta.status();
      auto opened = ChunkPayload::Open(view, *meta);
      ASSERT_TRUE(opened.ok()) << opened.status();
      const size_t tensor = want->tensor_numel();
      std::vector<float> k(tensor), v(tensor);
      std::vector<uint16_t> k16(tensor), v16(tensor), want_k16(tensor), want_v16(tensor);
      auto whole = ChunkPayload::Open(*chunk, want->meta);
      ASSERT_TRUE(whole.ok()) << whole.status();
      for (int l = 0; l < kLayers; ++l) {
        ASSERT_TRUE(opened->DecodeLayer(l, k.data(), v.data()).ok());
        EXPECT_EQ(k, std::vector<float>(want->k(l), want->k(l) + tensor)) << "layer " << l;
        EXPECT_EQ(v, std::vector<float>(want->v(l), want->v(l) + tensor)) << "layer " << l;
        if (!opened->DecodesToBf16Directly()) continue;
        auto* k8 = reinterpret_cast<uint8_t*>(k16.data());
        auto* v8 = reinterpret_cast<uint8_t*>(v16.data());
        ASSERT_TRUE(opened->DecodeLayerToBf16(l, k8, v8, f.meta.num_tokens()).ok());
        ASSERT_TRUE(whole
                        ->DecodeLayerToBf16(l, reinterpret_cast<uint8_t*>(want_k16.data()),
                                            reinterpret_cast<uint8_t*>(want_v16.data()),
                                            f.meta.num_tokens())
                        .ok());
        EXPECT_EQ(k16, want_k16) << "layer " << l;
        EXPECT_EQ(v16, want_v16) << "layer " << l;
      }
    }
    // One flipped bit in one range fails the CRC, as it does in one string.
    std::string bad = payload;
    bad[bad.size() / 2] ^= 4;
    const absl::string_view halves[] = {absl::string_view(bad).substr(0, 10),
                                        absl::string_view(bad).substr(10)};
    auto refused = ValidateChunk(header, PayloadView(halves), Limits());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << plan;
  }
}

TEST(Crc32cTest, KnownVectors) {
  // RFC 3720 B.4 test vectors.
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0'), ones(32, '\xff');
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(ones.data(), 32), 0x62A8AB43u);
  // Incremental equals one-shot.
  EXPECT_EQ(Crc32c("6789", 4, Crc32c("12345", 5)), 0xE3069283u);
  EXPECT_EQ(Crc32cPortable("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32cPortable(ones.data(), 32), 0x62A8AB43u);
}

// The dispatched CRC (the CPU's instruction where it has one) and the portable one agree
// at every length and alignment, including tails shorter than a word, and from below to
// past several stripes of the three-lane path (3 x 8 KiB each).
TEST(Crc32cTest, DispatchedEqualsPortable) {
  std::string data(100000, '\0');
  uint32_t x = 12345;
  for (char& c : data) c = static_cast<char>((x = x * 1103515245 + 12345) >> 24);
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t n : {0,    1,    7,     8,     9,     63,    64,    1000,  1535,  1536, 1537,
                     4091, 8192, 24575, 24576, 24577, 24583, 26115, 49152, 73735, 99992}) {
      ASSERT_EQ(Crc32c(data.data() + offset, n, 7), Crc32cPortable(data.data() + offset, n, 7))
          << "offset " << offset << " length " << n;
    }
  }
}

// Progressive sessions list their positions tier by tier: each run strictly increasing
// and starting afresh, no position twice.
TEST(PositionsTest, RunsRoundTripAndRefuseRepeats) {
  const std::vector<int32_t> p = {5, 9, 40, 0, 7, 41, 3};
  const std::vector<uint32_t> runs = {3, 3, 1};
  const std::string bytes = EncodePositionRuns(p, runs);
  EXPECT_EQ(bytes,
            EncodePositions({5, 9, 40}) + EncodePositions({0, 7, 41}) + EncodePositions({3}));
  auto back = DecodePositionRuns(bytes, runs, 42);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, p);
  EXPECT_FALSE(DecodePositionRuns(bytes, runs, 41).ok());          // 41 is out of range
  EXPECT_FALSE(DecodePositionRuns(bytes, {3, 3}, 42).ok());        // a trailing byte
  EXPECT_FALSE(DecodePositionRuns(bytes, {3, 3, 1, 1}, 42).ok());  // too short
  auto repeated = DecodePositionRuns(EncodePositionRuns({1, 2, 2}, {2, 1}), {2, 1}, 10);
  ASSERT_FALSE(repeated.ok());
  EXPECT_NE(repeated.status().message().find("position 2 appears in two runs"), std::string::npos)
      << repeated.status();
  auto descending = DecodePositionRuns(std::string("\x03\x01", 2), {1, 1}, 10);  // runs may fall
  ASSERT_TRUE(descending.ok()) << descending.status();
  EXPECT_EQ(*descending, (std::vector<int32_t>{3, 1}));
  auto gap0 = DecodePositionRuns(std::string("\x01\x00", 2), {2}, 10);
  ASSERT_FALSE(gap0.ok());
  EXPECT_NE(gap0.status().message().find("run 0: gap 1 is 0"), std::string::npos) << gap0.status();
}

TEST(PositionsTest, RoundTripAndSize) {
  std::vector<int32_t> p = {0, 1, 2, 200, 201, 100000};
  const std::string bytes = EncodePositions(p);
  EXPECT_EQ(bytes.size(), 1u + 1 + 1 + 2 + 1 + 3);  // varint sizes of 0,1,1,198,1,99799
  auto back = DecodePositions(bytes, 6, 100001);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, p);
  EXPECT_FALSE(DecodePositions(bytes, 7, 100001).ok());
  EXPECT_FALSE(DecodePositions(bytes, 6, 100000).ok());
  EXPECT_FALSE(DecodePositions("\xff\xff\xff\xff\xff\x01", 1, 10).ok());  // overlong
  // 4 as 0x84 0x00: the right value, not in its shortest form (found by session_open_fuzz).
  auto padded = DecodePositions(std::string("\x01\x84\x00", 3), 2, 10);
  EXPECT_FALSE(padded.ok());
  EXPECT_NE(padded.status().message().find("varint 1 of 2 is not in its shortest form"),
            std::string::npos)
      << padded.status();
}

}  // namespace
}  // namespace kvstream::codec
