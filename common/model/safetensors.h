// Memory-mapped safetensors files and sharded weight sets.
//
// File layout (https://github.com/huggingface/safetensors):
//   [8 bytes]  N, little-endian u64: length of the JSON header
//   [N bytes]  JSON object: { "__metadata__": {str: str}?,
//                             NAME: {"dtype": "F32"|"F16"|"BF16"|...,
//                                    "shape": [d0, d1, ...],
//                                    "data_offsets": [BEGIN, END]}, ... }
//   [rest]     the data buffer; each tensor's bytes are buffer[BEGIN, END), row major,
//              little endian, END - BEGIN == numel * element size, no two ranges overlap.
//
// A weight set is a model directory's `model.safetensors`, or the shards listed in
// `model.safetensors.index.json` ({"weight_map": {NAME: FILE}}).
//
// The parsers work on bytes in memory (ParseSafetensors, ParseSafetensorsIndex), so the
// fuzz targets beside this file reach them without files; Open and OpenDir add the I/O.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::model {

enum class StDType { kF32, kF16, kBF16 };
int StDTypeBytes(StDType d);
const char* StDTypeName(StDType d);

struct TensorView {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapping; valid while the file is open
  uint64_t nbytes = 0;
  int64_t numel() const;
};

// Validates a safetensors image of `size` bytes at `data` (length, JSON header, data
// buffer): every tensor's dtype, shape and offsets, and that no two overlap. The views'
// `data` point into `data`. `source` names the file in errors; `header`, when not null,
// receives the JSON header text.
absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(const uint8_t* data, size_t size,
                                                                   absl::string_view source,
                                                                   std::string* header = nullptr);

// The shard files `model.safetensors.index.json` text names, each once, in order of
// first mention. A shard is a plain file name beside the index: not empty, not "." or
// "..", no '/' and no NUL. `source` names the file in errors.
absl::StatusOr<std::vector<std::string>> ParseSafetensorsIndex(absl::string_view json,
                                                               absl::string_view source);

class SafetensorsFile {
 public:
  // Maps the file and validates the header and every tensor's offsets.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& header() const { return header_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView* Find(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::string header_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorView> tensors_;
};

class WeightSet {
 public:
  // Opens `dir/model.safetensors`, or every shard named by the index.
  static absl::StatusOr<std::unique_ptr<WeightSet>> OpenDir(const std::string& dir);
  // The tensor, or NOT_FOUND naming the tensor and the file(s) searched.
  absl::StatusOr<const TensorView*> Get(const std::string& name) const;
  // The tensor with an exact shape, or an error naming the expected and found shapes.
  absl::StatusOr<const TensorView*> Get(const std::string& name,
                                        const std::vector<int64_t>& shape) const;
  bool Has(const std::string& name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

// One tensor to write: `data` holds numel * element-size bytes.
struct TensorToWrite {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  std::string data;
};

// Writes a single-file safetensors (tensors sorted by name, 8-byte aligned header).
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace kvstream::model
