// Writes the seed corpus for the chunk decoder's fuzz target (common/codec/chunk_fuzz.cc):
//   build/bin/kvstream-make-chunk-corpus common/codec/chunk_fuzz_corpus
// Each file is a control byte (bit 0: recompute the CRC) and a serialized KvChunk: valid
// chunks of several specs (valid_*), and damaged ones (bad_*).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/codec/chunk.h"

using namespace kvstream::codec;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  std::mt19937 rng(1);
  std::normal_distribution<float> n;
  auto write = [&](const std::string& name, char control, const kvstream::v1::KvChunk& c) {
    std::ofstream out(dir / name, std::ios::binary);
    out.put(control);
    const std::string bytes = c.SerializeAsString();
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  int i = 0;
  for (const char* plan : {"raw", "f16", "int8", "int4/ch,zstd=3", "k=int3/g8,v=int5", "int2+ad4",
                           "f16+svd2", "int1/g4,zstd=1"}) {
    ChunkMeta m;
    m.session_id = "seed";
    m.seq = static_cast<uint64_t>(i);
    m.layer_begin = i % 2;
    m.layer_end = m.layer_begin + 2;
    m.positions = {0, 2, 3, 7};
    m.kv_heads = 2;
    m.head_dim = 8;
    auto p = ParsePlan(plan);
    if (!p.ok()) return 1;
    m.spec = p->ForLayer(0);
    m.zstd_level = p->zstd_level;
    std::vector<std::vector<float>> data(4, std::vector<float>(2 * 4 * 8));
    for (auto& t : data) {
      for (auto& x : t) x = n(rng);
    }
    std::vector<LayerKv> layers = {{data[0].data(), data[1].data()},
                                   {data[2].data(), data[3].data()}};
    auto chunk = EncodeChunk(m, layers);
    if (!chunk.ok()) {
      std::fprintf(stderr, "%s: %s\n", plan, chunk.status().ToString().c_str());
      return 1;
    }
    write("valid_" + std::to_string(i), 0, *chunk);
    kvstream::v1::KvChunk bad = *chunk;
    bad.mutable_payload()->resize(bad.payload().size() / 2);
    write("bad_truncated_" + std::to_string(i), 1, bad);
    bad = *chunk;
    bad.set_num_tokens(bad.num_tokens() + 1);
    write("bad_tokens_" + std::to_string(i), 1, bad);
    ++i;
  }
  std::printf("wrote %d seeds to %s\n", 3 * i, dir.c_str());
  return 0;
}
