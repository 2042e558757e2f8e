// kvstream-codec-bench: codec throughput on a 32 MiB fp32 buffer shaped like one KV layer
// (K and V, each [8 heads, 4096 tokens, 128 dims]), in GB/s of fp32 input, and each as a
// ratio to memcpy of the same buffer measured in the same process.
//
//   build/bin/kvstream-codec-bench [--benchmark_filter=REGEX] [--benchmark_min_time=0.2]
//
// Single thread. Tensor benchmarks time the quantize + pack kernels (EncodeTensor /
// DecodeTensor into preallocated buffers); chunk benchmarks time the whole chunk path
// (allocation, zstd, CRC32C, validation). crc32c: the checksum alone, in GB/s of bytes
// checked (the CPU's instruction, and the portable table version).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/codec/chunk.h"
#include "common/codec/crc32c.h"
#include "common/codec/float_formats.h"
#include "common/codec/quantize.h"

namespace kvstream::codec {
namespace {

constexpr TensorShape kShape{8, 4096, 128};
constexpr size_t kNumel = 8 * 4096 * 128;
constexpr size_t kInputBytes = 2 * kNumel * sizeof(float);  // K and V

struct Data {
  std::vector<float> k, v;
  Data() : k(kNumel), v(kNumel) {
    std::mt19937 rng(1);
    std::normal_distribution<float> n;
    for (size_t i = 0; i < kNumel; ++i) {
      k[i] = n(rng) * (1.0f + (i % 128) / 32.0f);  // channel-dependent spread, like keys
      v[i] = n(rng) * 0.5f;
    }
  }
};
const Data& GetData() {
  static const Data data;
  return data;
}

void BM_Memcpy(benchmark::State& state) {
  const Data& d = GetData();
  std::vector<float> dk(kNumel), dv(kNumel);
  for (auto _ : state) {
    std::memcpy(dk.data(), d.k.data(), kNumel * 4);
    std::memcpy(dv.data(), d.v.data(), kNumel * 4);
    benchmark::DoNotOptimize(dk.data());
    benchmark::DoNotOptimize(dv.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kInputBytes));
}

// CRC32C over the K half of the buffer (the check every chunk's payload gets on both ends).
void BM_Crc32c(benchmark::State& state, bool portable) {
  const Data& d = GetData();
  const size_t bytes = kNumel * sizeof(float);
  for (auto _ : state) {
    benchmark::DoNotOptimize(portable ? Crc32cPortable(d.k.data(), bytes)
                                      : Crc32c(d.k.data(), bytes));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

// A 1 MiB chunk's bytes (in cache, as a payload just received is) checked as one buffer,
// or as ranges of `part` bytes as a payload held in the slices gRPC received it in is.
void BM_Crc32cChunk(benchmark::State& state, size_t part) {
  const Data& d = GetData();
  const size_t bytes = 1 << 20;
  const auto* p = reinterpret_cast<const char*>(d.k.data());
  std::vector<absl::string_view> parts;
  for (size_t at = 0; at < bytes; at += part)
    parts.emplace_back(p + at, std::min(part, bytes - at));
  for (auto _ : state) {
    benchmark::DoNotOptimize(part == bytes ? Crc32c(p, bytes) : Crc32c(absl::MakeConstSpan(parts)));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

void BM_EncodeTensor(benchmark::State& state, const std::string& spec_text) {
  const Data& d = GetData();
  const TensorSpec spec = *ParseTensorSpec(spec_text);
  const uint64_t bytes = EncodedTensorBytes(spec, kShape, DType::kF32);
  std::vector<uint8_t> ok(bytes), ov(bytes);
  for (auto _ : state) {
    if (!EncodeTensor(spec, kShape, DType::kF32, d.k.data(), ok.data()).ok() ||
        !EncodeTensor(spec, kShape, DType::kF32, d.v.data(), ov.data()).ok()) {
      state.SkipWithError("encode failed");
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kInputBytes));
  state.counters["wire_share"] = static_cast<double>(2 * bytes) / kInputBytes;
}

void BM_DecodeTensor(benchmark::State& state, const std::string& spec_text) {
  const Data& d = GetData();
  const TensorSpec spec = *ParseTensorSpec(spec_text);
  const uint64_t bytes = EncodedTensorBytes(spec, kShape, DType::kF32);
  std::vector<uint8_t> ek(bytes), ev(bytes);
  (void)EncodeTensor(spec, kShape, DType::kF32, d.k.data(), ek.data());
  (void)EncodeTensor(spec, kShape, DType::kF32, d.v.data(), ev.data());
  std::vector<float> yk(kNumel), yv(kNumel);
  for (auto _ : state) {
    (void)DecodeTensor(spec, kShape, DType::kF32, ek.data(), bytes, yk.data());
    (void)DecodeTensor(spec, kShape, DType::kF32, ev.data(), bytes, yv.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kInputBytes));
}

// Decoding into bf16 rows as a bf16 cache takes them (DecodeTensorToBf16), against
// decoding to float32 and rounding afterwards; `dim` 128 is the buffer's shape, 64 the
// same values as [16 heads, 4096 tokens, 64 dims] (Qwen2.5-0.5B's and 3B's head size).
void BM_DecodeBf16(benchmark::State& state, const std::string& spec_text, int64_t dim,
                   bool direct) {
  const Data& d = GetData();
  const TensorSpec spec = *ParseTensorSpec(spec_text);
  const TensorShape shape{static_cast<int64_t>(kNumel) / 4096 / dim, 4096, dim};
  const uint64_t bytes = EncodedTensorBytes(spec, shape, DType::kF32);
  std::vector<uint8_t> ek(bytes), ev(bytes), out(2 * kNumel);
  if (!EncodeTensor(spec, shape, DType::kF32, d.k.data(), ek.data()).ok() ||
      !EncodeTensor(spec, shape, DType::kF32, d.v.data(), ev.data()).ok()) {
    state.SkipWithError("encode failed");
    return;
  }
  std::vector<float> y(direct ? 0 : kNumel);
  for (auto _ : state) {
    for (const auto* e : {&ek, &ev}) {
      const absl::Status st =
          direct ? DecodeTensorToBf16(spec, shape, DType::kF32, e->data(), bytes, out.data(), 4096)
                 : DecodeTensor(spec, shape, DType::kF32, e->data(), bytes, y.data());
      if (!st.ok()) {
        state.SkipWithError(std::string(st.message()).c_str());
        return;
      }
      if (!direct) FloatsToBf16Rounded(y.data(), static_cast<int64_t>(kNumel), out.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kInputBytes));
}

// The float formats on the software path, for the ratio of the F16C / AVX2 one to it.
void BM_Software(benchmark::State& state, bool encode, const std::string& spec_text) {
  const FloatPath before = ActiveFloatPath();
  ForceFloatPath(FloatPath::kScalar);
  if (encode) {
    BM_EncodeTensor(state, spec_text);
  } else {
    BM_DecodeTensor(state, spec_text);
  }
  ForceFloatPath(before);
}

ChunkMeta Meta(const std::string& plan_text) {
  const Plan plan = *ParsePlan(plan_text);
  ChunkMeta m;
  m.session_id = "bench";
  m.layer_begin = 0;
  m.layer_end = 1;
  m.positions.resize(kShape.tokens);
  for (int i = 0; i < kShape.tokens; ++i) m.positions[i] = i;
  m.kv_heads = static_cast<int>(kShape.heads);
  m.head_dim = static_cast<int>(kShape.dim);
  m.spec = plan.ForLayer(0);
  m.zstd_level = plan.zstd_level;
  return m;
}

void BM_EncodeChunk(benchmark::State& state, const std::string& plan_text) {
  const Data& d = GetData();
  const ChunkMeta m = Meta(plan_text);
  const LayerKv layer{d.k.data(), d.v.data()};
  size_t wire = 0;
  for (auto _ : state) {
    auto chunk = EncodeChunk(m, {&layer, 1});
    if (!chunk.ok()) {
      state.SkipWithError("encode failed");
      break;
    }
    wire = chunk->payload().size();
    benchmark::DoNotOptimize(chunk->crc32c());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kInputBytes));
  state.counters["wire_share"] = static_cast<double>(wire) / kInputBytes;
}

void BM_DecodeChunk(benchmark::State& state, const std::string& plan_text) {
  const Data& d = GetData();
  const ChunkMeta m = Meta(plan_text);
  const LayerKv layer{d.k.data(), d.v.data()};
  const auto chunk = *EncodeChunk(m, {&layer, 1});
  ChunkLimits limits;
  limits.max_position = kShape.tokens;
  // Decode into a reused buffer, as a receiver decodes into its staging cache (a fresh
  // 32 MiB allocation per chunk would mostly time page faults).
  std::vector<float> out(2 * kNumel);
  ChunkMeta meta;
  for (auto _ : state) {
    if (!DecodeChunkInto(chunk, limits, &meta, absl::MakeSpan(out)).ok()) {
      state.SkipWithError("decode failed");
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kInputBytes));
}

// Collects each run's throughput so the ratios can be printed after the console table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred || run.run_type != Run::RT_Iteration) continue;
      auto it = run.counters.find("bytes_per_second");
      if (it != run.counters.end()) rates_.push_back({run.benchmark_name(), it->second.value});
    }
  }
  const std::vector<std::pair<std::string, double>>& rates() const { return rates_; }

 private:
  std::vector<std::pair<std::string, double>> rates_;
};

}  // namespace
}  // namespace kvstream::codec

int main(int argc, char** argv) {
  using namespace kvstream::codec;
  benchmark::RegisterBenchmark("memcpy", BM_Memcpy);
  benchmark::RegisterBenchmark("crc32c", BM_Crc32c, false);
  benchmark::RegisterBenchmark("crc32c/portable", BM_Crc32c, true);
  benchmark::RegisterBenchmark("crc32c/1MiB", BM_Crc32cChunk, size_t{1} << 20);
  benchmark::RegisterBenchmark("crc32c/1MiB_as_8KiB_ranges", BM_Crc32cChunk, size_t{8192});
  for (const char* spec : {"int8", "int4", "int2", "int8/ch", "int4/ch", "int2/ch", "int8/g32",
                           "int4/g32", "int2/g32", "int3", "int6/ch", "f16", "bf16"}) {
    benchmark::RegisterBenchmark((std::string("encode/") + spec).c_str(), BM_EncodeTensor, spec);
    benchmark::RegisterBenchmark((std::string("decode/") + spec).c_str(), BM_DecodeTensor, spec);
  }
  for (const char* spec : {"int8", "int4"}) {
    for (const int64_t dim : {128, 64}) {
      const std::string tail = std::string(spec) + "/d" + std::to_string(dim);
      benchmark::RegisterBenchmark(("to_bf16/float32_then_round/" + tail).c_str(), BM_DecodeBf16,
                                   spec, dim, false);
      benchmark::RegisterBenchmark(("to_bf16/direct/" + tail).c_str(), BM_DecodeBf16, spec, dim,
                                   true);
    }
  }
  for (const char* spec : {"f16", "bf16"}) {
    benchmark::RegisterBenchmark((std::string("encode/") + spec + "/software").c_str(), BM_Software,
                                 true, spec);
    benchmark::RegisterBenchmark((std::string("decode/") + spec + "/software").c_str(), BM_Software,
                                 false, spec);
  }
  for (const char* plan :
       {"int8", "int8,zstd=1", "int4", "int4,zstd=1", "int4,zstd=3", "int2,zstd=1"}) {
    benchmark::RegisterBenchmark((std::string("chunk_encode/") + plan).c_str(), BM_EncodeChunk,
                                 plan);
    benchmark::RegisterBenchmark((std::string("chunk_decode/") + plan).c_str(), BM_DecodeChunk,
                                 plan);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  double memcpy_rate = 0;
  for (const auto& [name, rate] : reporter.rates()) {
    if (name == "memcpy") memcpy_rate = rate;
  }
  if (memcpy_rate <= 0) return 0;
  std::printf("\n%-28s %10s %14s\n", "benchmark", "GB/s", "x memcpy");
  for (const auto& [name, rate] : reporter.rates()) {
    std::printf("%-28s %10.2f %14.3f\n", name.c_str(), rate / 1e9, rate / memcpy_rate);
  }
  std::printf("\ntarget: int4 per-token encode and decode >= 0.25x memcpy (stretch 0.5x)\n");
  benchmark::Shutdown();
  return 0;
}
