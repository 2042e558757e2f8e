#include "common/model/kv_chunks.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "common/codec/crc32c.h"
#include "common/model/generate.h"
#include "tests/common/model/tiny_model.h"

namespace kvstream::model {
namespace {

class KvChunksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (dir_.empty()) dir_ = testing::WriteTinyModel("kv_chunks_model", testing::TinyConfig(), 21);
  }
  std::unique_ptr<Model> Load(const std::string& dtype = "f32") {
    auto m = Model::Load(dir_, {"cpu", dtype});
    EXPECT_TRUE(m.ok()) << m.status();
    return std::move(*m);
  }
  // A compacted cache: 30 prompt tokens, every third one dropped.
  std::unique_ptr<KvCache> Cache(Model& m) {
    std::vector<int32_t> tokens(30);
    for (int i = 0; i < 30; ++i) tokens[i] = (i * 13 + 5) % 96;
    auto pre = m.Prefill(tokens);
    std::vector<int32_t> kept;
    for (int i = 0; i < 30; ++i) {
      if (i % 3 != 1) kept.push_back(i);
    }
    EXPECT_TRUE(pre->cache->Compact(kept).ok());
    return std::move(pre->cache);
  }
  // Assembles `cache` encoded under `plan_text` (several chunks per layer) into a bf16
  // cache, and compares it bit for bit with the chunks decoded to float32 and written in.
  static void ExpectDirectEqualsFloat(Model& m, const KvCache& cache, const char* plan_text) {
    auto plan = codec::ParsePlan(plan_text);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ChunkingOptions co;
    co.max_chunk_bytes = 200;
    auto chunks = EncodeCache(cache, *plan, "bf", co);
    ASSERT_TRUE(chunks.ok()) << chunks.status();
    const int L = m.config().num_layers, H = m.config().num_kv_heads, D = m.config().head_dim;
    ASSERT_GT(chunks->size(), static_cast<size_t>(L));
    CacheAssembler direct(m, "bf", cache.positions(), cache.next_position());
    auto through_float = m.NewCache(cache.positions(), cache.next_position());
    for (const auto& c : *chunks) {
      ASSERT_TRUE(direct.Add(c).ok());
      auto decoded = codec::DecodeChunk(c, {});
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      const codec::ChunkMeta& meta = decoded->meta;
      for (int i = 0; i < meta.num_layers(); ++i) {
        ASSERT_TRUE(through_float
                        ->WriteLayer(meta.layer_begin + i, meta.token_begin, meta.num_tokens(),
                                     decoded->k(i), decoded->v(i))
                        .ok());
      }
    }
    auto rebuilt = direct.Finish();
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    const size_t count = static_cast<size_t>(H) * cache.size() * D;
    std::vector<uint16_t> k0(count), v0(count), k1(count), v1(count);
    for (int l = 0; l < L; ++l) {
      ASSERT_TRUE(through_float->ExportLayerRaw(l, 0, cache.size(), k0.data(), v0.data()).ok());
      ASSERT_TRUE((*rebuilt)->ExportLayerRaw(l, 0, cache.size(), k1.data(), v1.data()).ok());
      ASSERT_EQ(k1, k0) << "layer " << l;
      ASSERT_EQ(v1, v0) << "layer " << l;
    }
  }
  static std::string dir_;
};
std::string KvChunksTest::dir_;

TEST_F(KvChunksTest, RawPlanRebuildsBitExactFromShuffledChunks) {
  for (const char* dtype : {"f32", "bf16"}) {
    SCOPED_TRACE(dtype);
    auto m = Load(dtype);
    auto cache = Cache(*m);
    ChunkingOptions o;
    o.max_chunk_bytes = 300;  // forces token runs within a layer (a layer is 1280-2560 bytes)
    EncodeStats stats;
    auto chunks = EncodeCache(*cache, *codec::ParsePlan("raw"), "s1", o, 5, &stats);
    ASSERT_TRUE(chunks.ok()) << chunks.status();
    EXPECT_GT(chunks->size(), 4u);
    EXPECT_EQ(stats.chunks, static_cast<int>(chunks->size()));
    EXPECT_EQ((*chunks)[0].seq(), 5u);
    const uint64_t elems = 2ull * 2 * 2 * 20 * 8;  // K+V x layers x kv_heads x slots x head_dim
    EXPECT_EQ(stats.bytes16, elems * 2);
    EXPECT_EQ(stats.raw_bytes, elems * (std::string(dtype) == "f32" ? 4 : 2));
    std::mt19937 rng(3);
    std::shuffle(chunks->begin(), chunks->end(), rng);
    CacheAssembler asm_(*m, "s1", cache->positions(), cache->next_position());
    for (const auto& c : *chunks) ASSERT_TRUE(asm_.Add(c).ok());
    ASSERT_TRUE(asm_.complete());
    auto rebuilt = asm_.Finish();
    ASSERT_TRUE(rebuilt.ok());
    auto a = m->Extend(*cache, {7}, {30}), b = m->Extend(**rebuilt, {7}, {30});
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*a, *b);
  }
}

// A raw chunk whose dtype is not the receiver's cache dtype goes through the decoder:
// bf16 into an f32 cache is exact, f32 into a bf16 cache rounds to bf16.
TEST_F(KvChunksTest, RawChunksOfTheOtherDtypeAreConverted) {
  auto f32 = Load("f32"), bf16 = Load("bf16");
  for (const bool to_bf16 : {false, true}) {
    SCOPED_TRACE(to_bf16 ? "f32 -> bf16" : "bf16 -> f32");
    Model& from = to_bf16 ? *f32 : *bf16;
    Model& to = to_bf16 ? *bf16 : *f32;
    auto cache = Cache(from);
    auto chunks = EncodeCache(*cache, *codec::ParsePlan("raw"), "x", {}, 0);
    ASSERT_TRUE(chunks.ok()) << chunks.status();
    CacheAssembler assembler(to, "x", cache->positions(), cache->next_position());
    for (const auto& c : *chunks) ASSERT_TRUE(assembler.Add(c).ok());
    auto rebuilt = assembler.Finish();
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    EXPECT_EQ((*rebuilt)->is_bf16(), to_bf16);
    const size_t n = static_cast<size_t>(cache->kv_heads()) * cache->size() * cache->head_dim();
    std::vector<float> k0(n), v0(n), k1(n), v1(n);
    for (int l = 0; l < cache->num_layers(); ++l) {
      ASSERT_TRUE(cache->ExportLayer(l, 0, cache->size(), k0.data(), v0.data()).ok());
      ASSERT_TRUE((*rebuilt)->ExportLayer(l, 0, cache->size(), k1.data(), v1.data()).ok());
      for (size_t i = 0; i < n; ++i) {
        // bf16 keeps 8 significant bits: within 2^-8 relative of the f32 value.
        const float tol = to_bf16 ? std::fabs(k0[i]) / 256 : 0;
        ASSERT_NEAR(k1[i], k0[i], tol) << "layer " << l << " element " << i;
        ASSERT_NEAR(v1[i], v0[i], to_bf16 ? std::fabs(v0[i]) / 256 : 0);
      }
    }
  }
}

// Float32 written into a bf16 cache (a receiver decoding quantized chunks) rounds to
// nearest even, eight at a time where the CPU allows, and keeps what bf16 cannot hold
// finite as torch would: infinities, NaN, and values that round past the largest bf16.
TEST_F(KvChunksTest, Float32WritesIntoABf16CacheRoundToNearestEven) {
  auto m = Load("bf16");
  const int H = m->config().num_kv_heads, D = m->config().head_dim, n = 13;
  std::vector<int32_t> positions(n);
  std::iota(positions.begin(), positions.end(), 0);
  auto cache = m->NewCache(positions, n);
  const size_t count = static_cast<size_t>(H) * n * D;
  ASSERT_GT(count, 100u);
  std::vector<float> k(count), v(count);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-4, 4);
  for (size_t i = 0; i < count; ++i) k[i] = v[i] = u(rng);
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {
      std::nanf(""), inf,    -inf,  3.4e38f,
      -3.4e38f,      1e-40f, -0.0f, 1.00390625f /* halfway: rounds to even, 1.0 */,
      1.01171875f};
  for (size_t i = 0; i < std::size(specials); ++i) k[3 + 11 * i] = specials[i];
  ASSERT_TRUE(cache->WriteLayer(0, 0, n, k.data(), v.data()).ok());
  std::vector<uint16_t> kb(count), vb(count);
  ASSERT_TRUE(cache->ExportLayerRaw(0, 0, n, kb.data(), vb.data()).ok());
  for (size_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &k[i], 4);
    if (std::isnan(k[i])) {
      EXPECT_EQ(kb[i] & 0x7f80u, 0x7f80u) << i;
      EXPECT_NE(kb[i] & 0x007fu, 0u) << i;
      continue;
    }
    const auto want = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    ASSERT_EQ(kb[i], want) << "element " << i << " = " << k[i];
  }
  EXPECT_EQ(kb[3 + 11 * 3], 0x7f80u);  // 3.4e38 rounds up to +inf
  EXPECT_EQ(kb[3 + 11 * 7], 0x3f80u);  // the halfway case goes to even (1.0)
}

// Int chunks decode straight into a bf16 cache; the cache holds the bits the float32 path
// gives (decode, then write the floats in), for per-token, per-channel and grouped
// specs, several chunks per layer, and zstd; with head_dim 8 (rows of the blocked path)
// and 32 (per-token int8 and int4 rows in vector registers).
TEST_F(KvChunksTest, IntChunksDecodeIntoABf16CacheAsThroughFloat32) {
  ModelConfig wide = testing::TinyConfig();
  wide.head_dim = 32;
  const std::string wide_dir = testing::WriteTinyModel("kv_chunks_wide", wide, 22);
  for (const std::string& dir : {dir_, wide_dir}) {
    auto m = Model::Load(dir, {"cpu", "bf16"});
    ASSERT_TRUE(m.ok()) << m.status();
    SCOPED_TRACE("head_dim " + std::to_string((*m)->config().head_dim));
    auto cache = Cache(**m);
    for (const char* text : {"int8", "int4", "int4/ch", "int2/g8,zstd=1", "int3,L0=f16"}) {
      SCOPED_TRACE(text);
      ExpectDirectEqualsFloat(**m, *cache, text);
    }
  }
}

// A receiver holding each payload in the ranges it arrived in (the cloud keeps gRPC's
// slices) builds the cache bit for bit as from whole chunks: raw chunks copied head by
// head across range boundaries, int chunks decoded.
TEST_F(KvChunksTest, PayloadsHeldInRangesAssembleAsWholeChunks) {
  for (const char* dtype : {"f32", "bf16"}) {
    auto m = Load(dtype);
    auto cache = Cache(*m);
    for (const char* text : {"raw", "int8", "int4/ch,zstd=1"}) {
      SCOPED_TRACE(std::string(dtype) + ", " + text);
      ChunkingOptions co;
      co.max_chunk_bytes = 300;
      auto chunks = EncodeCache(*cache, *codec::ParsePlan(text), "r", co);
      ASSERT_TRUE(chunks.ok()) << chunks.status();
      CacheAssembler whole(*m, "r", cache->positions(), cache->next_position());
      CacheAssembler held(*m, "r", cache->positions(), cache->next_position());
      for (const kvstream::v1::KvChunk& c : *chunks) {
        ASSERT_TRUE(whole.Add(c).ok());
        std::vector<absl::string_view> parts;
        for (size_t at = 0; at < c.payload().size(); at += 7) {
          parts.push_back(absl::string_view(c.payload()).substr(at, 7));
        }
        const codec::PayloadView view(parts);
        kvstream::v1::KvChunk header = c;
        header.clear_payload();
        auto meta = held.Validate(header, view);
        ASSERT_TRUE(meta.ok()) << meta.status();
        ASSERT_TRUE(held.AddValidated(view, *meta).ok());
      }
      auto a = whole.Finish(), b = held.Finish();
      ASSERT_TRUE(a.ok() && b.ok());
      const size_t bytes = static_cast<size_t>((*a)->kv_heads()) * cache->size() *
                           (*a)->head_dim() * ((*a)->is_bf16() ? 2 : 4);
      // Raw chunks: the sender's own cache; the others: the whole chunks' cache.
      const KvCache& want = std::string(text) == "raw" ? *cache : **a;
      std::vector<uint8_t> k0(bytes), v0(bytes), k1(bytes), v1(bytes);
      for (int l = 0; l < (*a)->num_layers(); ++l) {
        ASSERT_TRUE(want.ExportLayerRaw(l, 0, cache->size(), k0.data(), v0.data()).ok());
        ASSERT_TRUE((*b)->ExportLayerRaw(l, 0, cache->size(), k1.data(), v1.data()).ok());
        ASSERT_EQ(k1, k0) << "layer " << l;
        ASSERT_EQ(v1, v0) << "layer " << l;
      }
    }
  }
}

// Layer ranges let a sender encode a few layers at a time, each range under its own
// plan; the assembler takes the pieces like any other chunks.
TEST_F(KvChunksTest, LayerRangesEncodeOnlyTheirLayersAndAssembleTogether) {
  auto m = Load();
  auto cache = Cache(*m);
  const int L = cache->num_layers();
  ASSERT_GE(L, 2);
  CacheAssembler assembler(*m, "ranges", cache->positions(), cache->next_position());
  uint64_t seq = 0;
  for (int l = 0; l < L; ++l) {
    ChunkingOptions o;
    o.layer_begin = l;
    o.layer_end = l + 1;
    auto chunks = EncodeCache(*cache, *codec::ParsePlan(l == 0 ? "raw" : "int8"), "ranges", o, seq);
    ASSERT_TRUE(chunks.ok()) << chunks.status();
    for (const auto& c : *chunks) {
      EXPECT_EQ(c.layer_begin(), static_cast<uint32_t>(l));
      EXPECT_EQ(c.layer_end(), static_cast<uint32_t>(l + 1));
      EXPECT_EQ(c.seq(), seq++);
      ASSERT_TRUE(assembler.Add(c).ok());
    }
    EXPECT_EQ(assembler.complete(), l == L - 1);
  }
  auto rebuilt = assembler.Finish();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  // Layer 0 went raw: bit-exact.
  const int n = cache->size(), HD = cache->kv_heads() * cache->head_dim();
  std::vector<float> k0(static_cast<size_t>(n) * HD), v0(k0.size()), k1(k0.size()), v1(k0.size());
  ASSERT_TRUE(cache->ExportLayer(0, 0, n, k0.data(), v0.data()).ok());
  ASSERT_TRUE((*rebuilt)->ExportLayer(0, 0, n, k1.data(), v1.data()).ok());
  EXPECT_EQ(k0, k1);
  EXPECT_EQ(v0, v1);
  for (auto [b, e] : {std::pair<int, int>{-1, 1}, {1, 1}, {0, L + 1}}) {
    ChunkingOptions o;
    o.layer_begin = b;
    o.layer_end = e;
    EXPECT_EQ(EncodeCache(*cache, *codec::ParsePlan("int8"), "x", o).status().code(),
              absl::StatusCode::kInvalidArgument)
        << b << ".." << e;
  }
  // A prefix of the slots (a sender that encodes while the prompt's last token is still
  // in the cache) carries only those slots' positions; more slots than the cache has, or
  // none, is refused.
  ChunkingOptions prefix;
  prefix.num_slots = n - 1;
  auto head = EncodeCache(*cache, *codec::ParsePlan("raw"), "x", prefix);
  ASSERT_TRUE(head.ok()) << head.status();
  const std::vector<int32_t> first(cache->positions().begin(), cache->positions().end() - 1);
  CacheAssembler head_cache(*m, "x", first, cache->next_position());
  for (const auto& c : *head) ASSERT_TRUE(head_cache.Add(c).ok());
  EXPECT_TRUE(head_cache.complete());
  for (int bad : {n + 1, 0}) {
    prefix.num_slots = bad;
    EXPECT_EQ(EncodeCache(*cache, *codec::ParsePlan("raw"), "x", prefix).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST_F(KvChunksTest, MixedPlanSplitsAtSpecBoundariesAndStaysClose) {
  auto m = Load();
  auto cache = Cache(*m);
  auto plan = codec::ParsePlan("int8/ch,L0=f16,zstd=3");
  auto chunks = EncodeCache(*cache, *plan, "s2", {}, 0);
  ASSERT_TRUE(chunks.ok());
  ASSERT_EQ(chunks->size(), 2u);  // layer 0 (f16) and layer 1 (int8): small enough for one each
  EXPECT_EQ((*chunks)[0].layer_end(), 1u);
  EXPECT_EQ((*chunks)[0].k_spec().format(), kvstream::v1::FORMAT_F16);
  EXPECT_EQ((*chunks)[1].k_spec().bits(), 8u);
  CacheAssembler asm_(*m, "s2", cache->positions(), cache->next_position());
  for (const auto& c : *chunks) ASSERT_TRUE(asm_.Add(c).ok());
  auto rebuilt = asm_.Finish();
  auto a = m->Extend(*cache, {7}, {30}), b = m->Extend(**rebuilt, {7}, {30});
  float diff = 0;
  for (size_t i = 0; i < a->size(); ++i) diff = std::max(diff, std::abs((*a)[i] - (*b)[i]));
  EXPECT_GT(diff, 0.0f);   // lossy ...
  EXPECT_LT(diff, 0.05f);  // ... but close
}

TEST_F(KvChunksTest, AssemblerRejectsBadChunksAndIncompleteCaches) {
  auto m = Load();
  auto cache = Cache(*m);
  ChunkingOptions o;
  o.max_chunk_bytes = 500;  // an int4 layer is 640 bytes: two token runs each
  auto chunks = EncodeCache(*cache, *codec::ParsePlan("int4"), "s3", o, 0);
  ASSERT_TRUE(chunks.ok());
  ASSERT_GE(chunks->size(), 2u);
  CacheAssembler a(*m, "s3", cache->positions(), cache->next_position());
  ASSERT_TRUE(a.Add((*chunks)[0]).ok());
  auto dup = a.Add((*chunks)[0]);
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dup.message().find("already received"), std::string::npos) << dup;
  auto bad = (*chunks)[1];
  (*bad.mutable_payload())[0] ^= 1;
  EXPECT_EQ(a.Add(bad).code(), absl::StatusCode::kDataLoss);
  auto early = a.Finish();
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(early.status().message().find("not received"), std::string::npos);

  // The session expects other positions: the chunk is refused, naming the slot.
  std::vector<int32_t> shifted = cache->positions();
  shifted[0] = 1;
  shifted[1] = 2;
  CacheAssembler b(*m, "s3", shifted, cache->next_position());
  auto st = b.Add((*chunks)[0]);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("the session expects"), std::string::npos) << st;
  CacheAssembler c(*m, "other", cache->positions(), cache->next_position());
  EXPECT_NE(c.Add((*chunks)[0]).message().find("session 's3', expected 'other'"),
            std::string::npos);
  EXPECT_EQ(EncodeCache(*cache, *codec::ParsePlan("int4,L5=f16"), "s", {}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Several threads encode the same chunks, in the same order, as one; an error is
// returned the same way.
TEST_F(KvChunksTest, ThreadsEncodeTheSameChunks) {
  auto m = Load();
  auto cache = Cache(*m);
  ChunkingOptions o;
  o.max_chunk_bytes = 120;  // many chunks
  auto one = EncodeCache(*cache, *codec::ParsePlan("int4/g8,L0=f16,L1.v=int3/ch"), "t", o, 3);
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_GT(one->size(), 8u);
  for (int threads : {2, 3, 64}) {
    o.threads = threads;
    EncodeStats stats;
    auto many =
        EncodeCache(*cache, *codec::ParsePlan("int4/g8,L0=f16,L1.v=int3/ch"), "t", o, 3, &stats);
    ASSERT_TRUE(many.ok()) << many.status();
    ASSERT_EQ(many->size(), one->size()) << threads;
    EXPECT_EQ(stats.chunks, static_cast<int>(one->size()));
    for (size_t i = 0; i < one->size(); ++i) {
      EXPECT_EQ((*many)[i].SerializeAsString(), (*one)[i].SerializeAsString())
          << threads << " " << i;
    }
  }
}

// Progressive sending: the slots in tiers (here the cache's 20 slots reordered, tiers
// of 8, 7 and 5), sent tier by tier with no chunk across two; a receiver holding only
// the first tiers rebuilds those slots in position order, and one holding every tier
// the cache as sent without tiers.
TEST_F(KvChunksTest, TiersAreSentInTurnAndAPrefixRebuildsInPositionOrder) {
  auto m = Load();
  auto cache = Cache(*m);  // 20 slots
  std::vector<int32_t> order(20);
  for (int i = 0; i < 20; ++i) order[i] = (i * 7) % 20;  // a permutation
  std::vector<uint32_t> tiers = {8, 7, 5};
  for (int t = 0, at = 0; t < 3; at += static_cast<int>(tiers[t]), ++t) {
    std::sort(order.begin() + at, order.begin() + at + tiers[t]);  // each tier ascending
  }
  auto tiered = cache->Copy(order);
  ASSERT_TRUE(tiered.ok()) << tiered.status();
  ChunkingOptions o;
  o.max_chunk_bytes = 400;  // an int4 layer of 8 slots is 256 bytes: layers apart in a tier
  o.tier_slots = tiers;
  auto chunks = EncodeCache(**tiered, *codec::ParsePlan("int4,L0=int8"), "s4", o, 0);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  const std::vector<int> ends = {8, 15, 20};
  int tier = 0;
  for (const auto& c : *chunks) {  // tiers in turn, none straddled, none revisited
    while (static_cast<int>(c.token_begin()) >= ends[tier]) ++tier;
    EXPECT_GE(static_cast<int>(c.token_begin()), tier == 0 ? 0 : ends[tier - 1]) << c.seq();
    EXPECT_LE(static_cast<int>(c.token_begin() + c.num_tokens()), ends[tier]) << c.seq();
  }
  EXPECT_EQ(tier, 2);
  // Wrong tier sizes are refused.
  o.tier_slots = {8, 7};
  EXPECT_EQ(EncodeCache(**tiered, *codec::ParsePlan("int4"), "s", o, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  CacheAssembler a(*m, "s4", (*tiered)->positions(), cache->next_position());
  CacheAssembler all(*m, "s4", (*tiered)->positions(), cache->next_position());
  for (const auto& c : *chunks) {
    if (c.token_begin() < 15) {
      ASSERT_TRUE(a.Add(c).ok());
    }
    ASSERT_TRUE(all.Add(c).ok());
  }
  EXPECT_EQ(a.CompletePrefix(), 15);
  EXPECT_EQ(a.FinishPrefix(16).status().code(), absl::StatusCode::kFailedPrecondition);
  auto prefix = a.FinishPrefix(15);
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  std::vector<int32_t> want((*tiered)->positions().begin(), (*tiered)->positions().begin() + 15);
  std::sort(want.begin(), want.end());
  EXPECT_EQ((*prefix)->positions(), want);
  EXPECT_EQ((*prefix)->size(), 15);
  EXPECT_EQ(a.FinishPrefix(15).status().code(), absl::StatusCode::kFailedPrecondition);  // taken
  auto whole = all.FinishPrefix(20);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto plain = EncodeCache(*cache, *codec::ParsePlan("int4,L0=int8"), "s5", {}, 0);
  ASSERT_TRUE(plain.ok());
  CacheAssembler b(*m, "s5", cache->positions(), cache->next_position());
  for (const auto& c : *plain) ASSERT_TRUE(b.Add(c).ok());
  auto sent = b.Finish();
  ASSERT_TRUE(sent.ok());
  EXPECT_EQ((*whole)->positions(), cache->positions());
  auto x = m->Extend(**whole, {7}, {30}), y = m->Extend(**sent, {7}, {30});
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(*x, *y);  // per-token specs: the same values, tiers or not
}

}  // namespace
}  // namespace kvstream::model

namespace kvstream::model {
namespace {

// The end-to-end oracle, in process: kv mode with a lossless spec (the cache shipped
// raw through chunks and rebuilt) generates exactly the tokens text mode generates.
TEST(KvOracleTest, LosslessKvModeEqualsTextModeOnTwentyPrompts) {
  const std::string dir = testing::WriteTinyModel("oracle_model", testing::TinyConfig(), 33);
  for (const char* dtype : {"f32", "bf16"}) {
    auto m = Model::Load(dir, {"cpu", dtype});
    ASSERT_TRUE(m.ok());
    SamplingOptions o;
    o.max_new_tokens = 12;
    for (int p = 0; p < 20; ++p) {
      std::vector<int32_t> prompt(10 + 3 * p);
      for (size_t i = 0; i < prompt.size(); ++i)
        prompt[i] = static_cast<int32_t>((i * (p + 3) + p) % 96);
      const std::vector<int32_t> head(prompt.begin(), prompt.end() - 1);
      auto text = (*m)->Prefill(head);
      auto want = Generate(**m, *text->cache, prompt.back(), o);
      ASSERT_TRUE(want.ok());

      auto edge = (*m)->Prefill(head);
      ChunkingOptions co;
      co.max_chunk_bytes = 512;
      auto chunks = EncodeCache(*edge->cache, *codec::ParsePlan("raw"), "oracle", co, 0);
      ASSERT_TRUE(chunks.ok()) << chunks.status();
      CacheAssembler cloud(**m, "oracle", edge->cache->positions(), edge->cache->next_position());
      for (const auto& c : *chunks) ASSERT_TRUE(cloud.Add(c).ok());
      auto rebuilt = cloud.Finish();
      ASSERT_TRUE(rebuilt.ok());
      auto got = Generate(**m, **rebuilt, prompt.back(), o);
      ASSERT_TRUE(got.ok());
      EXPECT_EQ(got->tokens, want->tokens) << dtype << " prompt " << p;
    }
  }
}

}  // namespace
}  // namespace kvstream::model
