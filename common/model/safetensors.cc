#include "common/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/status.h"

namespace kvstream::model {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // as the reference implementation

std::string ShapeString(const std::vector<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

bool ParseDType(const std::string& s, StDType* out) {
  if (s == "F32")
    *out = StDType::kF32;
  else if (s == "F16")
    *out = StDType::kF16;
  else if (s == "BF16")
    *out = StDType::kBF16;
  else
    return false;
  return true;
}

}  // namespace

int StDTypeBytes(StDType d) { return d == StDType::kF32 ? 4 : 2; }
const char* StDTypeName(StDType d) {
  switch (d) {
    case StDType::kF32:
      return "F32";
    case StDType::kF16:
      return "F16";
    case StDType::kBF16:
      return "BF16";
  }
  return "?";
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(const uint8_t* data, size_t size,
                                                                   absl::string_view source,
                                                                   std::string* header) {
  auto fail = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", parts...));
  };
  // header length
  if (size < 8) return fail("file is ", size, " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeaderBytes || n > size - 8) {
    return fail("header length ", n, " runs past the end of the ", size, "-byte file");
  }
  const absl::string_view text(reinterpret_cast<const char*>(data + 8), n);
  const uint8_t* buffer = data + 8 + n;
  const uint64_t buffer_size = size - 8 - n;

  // header JSON
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return fail("header is not a JSON object");

  // tensors
  std::map<std::string, TensorView> tensors;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string& name = it.key();
    const json& e = it.value();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") ||
        !e.contains("data_offsets")) {
      return fail("tensor ", name, ": expected {dtype, shape, data_offsets}");
    }
    TensorView v;
    v.name = name;
    if (!e["dtype"].is_string() || !ParseDType(e["dtype"].get<std::string>(), &v.dtype)) {
      return fail("tensor ", name, ": dtype ", e["dtype"].dump(),
                  " is not supported (F32, F16, BF16)");
    }
    if (!e["shape"].is_array()) return fail("tensor ", name, ": shape is not an array");
    uint64_t numel = 1;
    for (const json& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > (int64_t{1} << 40)) {
        return fail("tensor ", name, ": bad dimension ", d.dump());
      }
      v.shape.push_back(d.get<int64_t>());
      numel *= static_cast<uint64_t>(d.get<int64_t>());
      if (numel > (uint64_t{1} << 40)) return fail("tensor ", name, ": shape too large");
    }
    const json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      return fail("tensor ", name, ": data_offsets must be [BEGIN, END]");
    }
    const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    if (b > en || en > buffer_size) {
      return fail("tensor ", name, ": data_offsets [", b, ", ", en, "] outside the ", buffer_size,
                  "-byte data buffer");
    }
    v.nbytes = en - b;
    if (v.nbytes != numel * StDTypeBytes(v.dtype)) {
      return fail("tensor ", name, ": ", v.nbytes, " bytes for shape ", ShapeString(v.shape), " ",
                  StDTypeName(v.dtype), ", expected ", numel * StDTypeBytes(v.dtype));
    }
    v.data = buffer + b;
    ranges.emplace_back(b, en);
    tensors.emplace(name, std::move(v));
  }

  // no overlaps
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return fail("tensors overlap: [", ranges[i - 1].first, ", ", ranges[i - 1].second, ") and [",
                  ranges[i].first, ", ", ranges[i].second, ")");
    }
  }
  if (header != nullptr) header->assign(text.data(), text.size());
  return tensors;
}

absl::StatusOr<std::vector<std::string>> ParseSafetensorsIndex(absl::string_view text,
                                                               absl::string_view source) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
      !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected {\"weight_map\": {...}}"));
  }
  std::vector<std::string> shards;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    const json& v = it.value();
    const std::string file = v.is_string() ? v.get<std::string>() : std::string();
    if (file.empty() || file == "." || file == ".." ||
        file.find_first_of(std::string("/\0", 2)) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": weight_map[\"", it.key(),
                       "\"] must name a file beside the index, found ", v.dump()));
    }
    if (std::find(shards.begin(), shards.end(), file) == shards.end()) shards.push_back(file);
  }
  return shards;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;

  // map the file
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": fstat: ", std::strerror(errno)));
    }
    f->map_size_ = static_cast<size_t>(st.st_size);
    if (f->map_size_ < 8) {
      ::close(fd);
      return ParseSafetensors(nullptr, f->map_size_, path).status();
    }
    f->map_ = ::mmap(nullptr, f->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (f->map_ == MAP_FAILED) {
      f->map_ = nullptr;
      return absl::InternalError(absl::StrCat(path, ": mmap: ", std::strerror(errno)));
    }
  }
  ASSIGN_OR_RETURN(f->tensors_, ParseSafetensors(static_cast<const uint8_t*>(f->map_), f->map_size_,
                                                 path, &f->header_));
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::unique_ptr<WeightSet>> WeightSet::OpenDir(const std::string& dir) {
  auto ws = std::make_unique<WeightSet>();
  ws->dir_ = dir;
  const std::string single = dir + "/model.safetensors";
  const std::string index = dir + "/model.safetensors.index.json";
  std::vector<std::string> shards;
  if (std::ifstream(index).good()) {
    std::ifstream in(index);
    std::stringstream ss;
    ss << in.rdbuf();
    ASSIGN_OR_RETURN(shards, ParseSafetensorsIndex(ss.str(), index));
  } else if (std::ifstream(single).good()) {
    shards.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither model.safetensors nor model.safetensors.index.json"));
  }
  for (const std::string& shard : shards) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(absl::StrCat(dir, "/", shard)));
    for (const auto& [name, view] : file->tensors()) {
      if (!ws->index_.emplace(name, &view).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, ": tensor ", name, " appears in more than one shard"));
      }
    }
    ws->files_.push_back(std::move(file));
  }
  return ws;
}

bool WeightSet::Has(const std::string& name) const { return index_.count(name) > 0; }

absl::StatusOr<const TensorView*> WeightSet::Get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(
        absl::StrCat(dir_, ": tensor ", name, " is missing from ",
                     files_.size() == 1 ? files_[0]->path() : "every shard"));
  }
  return it->second;
}

absl::StatusOr<const TensorView*> WeightSet::Get(const std::string& name,
                                                 const std::vector<int64_t>& shape) const {
  ASSIGN_OR_RETURN(const TensorView* v, Get(name));
  if (v->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(dir_, ": tensor ", name, " has shape ",
                                                   ShapeString(v->shape), ", config needs ",
                                                   ShapeString(shape)));
  }
  return v;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<const TensorToWrite*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });
  uint64_t offset = 0;
  for (const TensorToWrite* t : order) {
    uint64_t numel = 1;
    for (int64_t d : t->shape) numel *= static_cast<uint64_t>(d);
    if (numel * StDTypeBytes(t->dtype) != t->data.size()) {
      return absl::InvalidArgumentError(absl::StrCat("write ", path, ": tensor ", t->name, " has ",
                                                     t->data.size(), " bytes for shape ",
                                                     ShapeString(t->shape)));
    }
    header[t->name] = {{"dtype", StDTypeName(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->data.size()}}};
    offset += t->data.size();
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write"));
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const TensorToWrite* t : order) {
    out.write(t->data.data(), static_cast<std::streamsize>(t->data.size()));
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace kvstream::model
