#include "common/model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace kvstream::model {
namespace {

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/" + name; }

std::string Floats(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.begin(), s.size());
  return s;
}

// A file with a hand-written header, for malformed cases.
std::string WriteRaw(const std::string& name, const std::string& header, const std::string& data,
                     int64_t declared_len = -1) {
  const std::string path = TempPath(name);
  std::ofstream out(path, std::ios::binary);
  uint64_t n = declared_len >= 0 ? static_cast<uint64_t>(declared_len) : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
  return path;
}

TEST(SafetensorsTest, WriteThenReadBack) {
  const std::string path = TempPath("rt.safetensors");
  TensorToWrite a{"b.weight", StDType::kF32, {2, 3}, Floats({1, 2, 3, 4, 5, 6})};
  TensorToWrite b{"a.bias", StDType::kBF16, {2}, std::string("\x80\x3f\x00\x40", 4)};
  ASSERT_TRUE(WriteSafetensors(path, {a, b}, {{"format", "pt"}}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorView* t = (*f)->Find("b.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t->dtype, StDType::kF32);
  float x[6];
  std::memcpy(x, t->data, 24);
  EXPECT_EQ(x[5], 6.0f);
  EXPECT_EQ((*f)->Find("a.bias")->dtype, StDType::kBF16);
  EXPECT_EQ((*f)->Find("missing"), nullptr);
  // Header is padded so the data buffer starts 8-byte aligned.
  EXPECT_EQ((8 + (*f)->header().size()) % 8, 0u);
}

TEST(SafetensorsTest, MalformedFilesGiveClearErrors) {
  struct Bad {
    const char* name;
    std::string header;
    std::string data;
    int64_t declared_len;
    const char* needle;
  };
  const std::string f4 = Floats({1, 2, 3, 4});
  const std::vector<Bad> table = {
      {"tiny", "", "", -2, "shorter than the 8-byte header length"},
      {"header_past_end", R"({"x": 1})", "", 1000, "header length 1000 runs past the end"},
      {"not_json", "{not json", "", -1, "header is not a JSON object"},
      {"offsets_past_end", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}})", f4,
       -1, "tensor w: data_offsets [0, 32] outside the 16-byte data buffer"},
      {"reversed_offsets", R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", f4,
       -1, "data_offsets [8, 4]"},
      {"overlap", R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
       f4, -1, "tensors overlap: [0, 8) and [4, 12)"},
      {"wrong_dtype", R"({"w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})", f4, -1,
       "tensor w: dtype \"I64\" is not supported (F32, F16, BF16)"},
      {"size_mismatch", R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", f4, -1,
       "tensor w: 16 bytes for shape [3] F32, expected 12"},
      {"missing_fields", R"({"w": {"dtype": "F32"}})", f4, -1,
       "expected {dtype, shape, data_offsets}"},
      {"negative_dim", R"({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})", f4, -1,
       "bad dimension -4"},
  };
  for (const Bad& b : table) {
    SCOPED_TRACE(b.name);
    std::string path;
    if (b.declared_len == -2) {
      path = TempPath(b.name);
      std::ofstream(path) << "abc";
    } else {
      path = WriteRaw(b.name, b.header, b.data, b.declared_len);
    }
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(f.status().message().find(b.needle), std::string::npos) << f.status().message();
    EXPECT_NE(f.status().message().find(path), std::string::npos) << "error names the file";
  }
  EXPECT_EQ(SafetensorsFile::Open(TempPath("absent")).status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, WeightSetSingleAndShardedAndMissingTensor) {
  const std::string dir = TempPath("ws_single");
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors",
                               {{"w", StDType::kF32, {2, 2}, Floats({1, 2, 3, 4})}})
                  .ok());
  auto ws = WeightSet::OpenDir(dir);
  ASSERT_TRUE(ws.ok()) << ws.status();
  EXPECT_TRUE((*ws)->Get("w", {2, 2}).ok());
  auto wrong = (*ws)->Get("w", {4});
  EXPECT_NE(wrong.status().message().find("tensor w has shape [2, 2], config needs [4]"),
            std::string::npos)
      << wrong.status();
  auto missing = (*ws)->Get("lm_head.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("tensor lm_head.weight is missing from"),
            std::string::npos);

  const std::string sharded = TempPath("ws_sharded");
  std::filesystem::create_directories(sharded);
  ASSERT_TRUE(
      WriteSafetensors(sharded + "/a.safetensors", {{"x", StDType::kF32, {1}, Floats({1})}}).ok());
  ASSERT_TRUE(
      WriteSafetensors(sharded + "/b.safetensors", {{"y", StDType::kF32, {1}, Floats({2})}}).ok());
  std::ofstream(sharded + "/model.safetensors.index.json")
      << R"({"metadata": {}, "weight_map": {"x": "a.safetensors", "y": "b.safetensors"}})";
  ws = WeightSet::OpenDir(sharded);
  ASSERT_TRUE(ws.ok()) << ws.status();
  EXPECT_EQ((*ws)->files().size(), 2u);
  EXPECT_TRUE((*ws)->Get("y").ok());

  std::ofstream(sharded + "/model.safetensors.index.json") << R"({"weight_map": {"x": "../a"}})";
  EXPECT_EQ(WeightSet::OpenDir(sharded).status().code(), absl::StatusCode::kInvalidArgument);
  // Names that are no file beside the index (found with safetensors_index_fuzz.cc: these
  // used to reach open() as the directory itself or its parent).
  for (const char* name : {R"("..")", R"(".")", R"("")", R"("a\u0000b")", "7"}) {
    SCOPED_TRACE(name);
    auto shards = ParseSafetensorsIndex(
        absl::StrCat(R"({"weight_map": {"x": "a.safetensors", "y": )", name, "}}"), "index.json");
    ASSERT_FALSE(shards.ok());
    EXPECT_NE(shards.status().message().find(absl::StrCat(
                  "index.json: weight_map[\"y\"] must name a file beside the index, found ")),
              std::string::npos)
        << shards.status();
  }
  auto shards = ParseSafetensorsIndex(
      R"({"weight_map": {"x": "a.safetensors", "y": "b.safetensors", "z": "a.safetensors"}})", "i");
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(*shards, (std::vector<std::string>{"a.safetensors", "b.safetensors"}));
  EXPECT_EQ(WeightSet::OpenDir(TempPath("nowhere")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvstream::model
