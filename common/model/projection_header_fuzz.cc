// libFuzzer target for the projection file's header (projection_header.h), the part of
// Projection::Load that runs before any weight is read. Input: one control byte, then
// either (bit 0 clear) the JSON header alone, or (bit 0 set) a whole safetensors image
// whose __metadata__ holds it.
//
// Invariants checked on every header that parses: one layer_map entry of distinct source
// layers inside the source model per target layer; dims in 1..2^20, head dims even; the
// header's JSON parses back to the same header. For whole files, also: every map is a
// tensor of F32 [d_in + 1, d_out] whose bytes lie inside the image, so the weights Load
// copies next are in bounds.
//
// Build and run: docs/fuzzing.md. The committed corpus (projection_header_fuzz_corpus/)
// also runs as a regression test
// (tests/common/model/projection_header_fuzz_corpus_test.cc).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/base/fuzz_check.h"
#include "common/model/projection_header.h"
#include "common/model/safetensors.h"

namespace {

using kvstream::model::ProjectionHeader;
using kvstream::model::ProjectionModel;

void CheckModel(const ProjectionModel& m) {
  for (int d : {m.num_layers, m.num_kv_heads, m.head_dim})
    kvstream::base::FuzzCheck(d >= 1 && d <= (1 << 20));
  kvstream::base::FuzzCheck(m.head_dim % 2 == 0);
}

void CheckHeader(const ProjectionHeader& h) {
  CheckModel(h.source);
  CheckModel(h.target);
  kvstream::base::FuzzCheck(static_cast<int>(h.layers.size()) == h.target.num_layers);
  for (size_t t = 0; t < h.layers.size(); ++t) {
    const auto& from = h.layers[t].source_layers;
    kvstream::base::FuzzCheck(!from.empty());
    std::set<int> seen;
    for (int l : from)
      kvstream::base::FuzzCheck(l >= 0 && l < h.source.num_layers && seen.insert(l).second);
    kvstream::base::FuzzCheck(kvstream::model::ProjectionInputDim(h, static_cast<int>(t)) > 0);
  }
  const std::string text = kvstream::model::ProjectionHeaderJson(h);
  auto again = kvstream::model::ParseProjectionHeader(text);
  kvstream::base::FuzzCheck(again.ok() && kvstream::model::ProjectionHeaderJson(*again) == text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  if (!(data[0] & 1)) {
    const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    if (auto h = kvstream::model::ParseProjectionHeader(text); h.ok()) CheckHeader(*h);
    return 0;
  }
  std::string st_header;
  auto tensors = kvstream::model::ParseSafetensors(data + 1, size - 1, "fuzz", &st_header);
  if (!tensors.ok()) return 0;
  auto h = kvstream::model::ReadProjectionHeader(st_header, *tensors);
  if (!h.ok()) return 0;
  CheckHeader(*h);
  const int64_t d_out = static_cast<int64_t>(h->target.num_kv_heads) * h->target.head_dim;
  for (int t = 0; t < h->target.num_layers; ++t) {
    for (const char* kind : {"k", "v"}) {
      auto it = tensors->find(absl::StrCat("layers.", t, ".", kind));
      kvstream::base::FuzzCheck(it != tensors->end());
      const kvstream::model::TensorView& view = it->second;
      const int64_t rows = kvstream::model::ProjectionInputDim(*h, t) + 1;
      kvstream::base::FuzzCheck(view.dtype == kvstream::model::StDType::kF32 &&
                                view.shape.size() == 2 && view.shape[0] == rows &&
                                view.shape[1] == d_out);
      kvstream::base::FuzzCheck(view.nbytes == static_cast<uint64_t>(rows * d_out) * 4);
      kvstream::base::FuzzCheck(view.data >= data && view.data + view.nbytes <= data + size);
    }
  }
  return 0;
}
