// libFuzzer target for the safetensors header (ParseSafetensors). Input: a whole
// safetensors image (8-byte length, JSON header, data buffer).
//
// Invariants checked on every image that parses: the header text is the image's bytes
// 8..8+N; every tensor's bytes lie inside the data buffer, match its shape and dtype
// (numel * element size) and overlap no other tensor's. Every byte of every tensor is
// read, so AddressSanitizer sees any view that points outside the input.
//
// Build and run: docs/fuzzing.md. The committed corpus (safetensors_fuzz_corpus/) also
// runs as a regression test (tests/common/model/safetensors_fuzz_corpus_test.cc).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "common/base/fuzz_check.h"
#include "common/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string header;
  auto tensors = kvstream::model::ParseSafetensors(data, size, "fuzz", &header);
  if (!tensors.ok()) return 0;
  kvstream::base::FuzzCheck(
      size >= 8 + header.size() &&
      header == std::string(reinterpret_cast<const char*>(data + 8), header.size()));
  const uint8_t* buffer = data + 8 + header.size();
  const uint8_t* end = data + size;
  std::vector<std::pair<const uint8_t*, const uint8_t*>> ranges;
  volatile uint8_t sink = 0;
  for (const auto& [name, view] : *tensors) {
    kvstream::base::FuzzCheck(view.name == name);
    uint64_t numel = 1;
    for (int64_t d : view.shape) {
      kvstream::base::FuzzCheck(d >= 0);
      numel *= static_cast<uint64_t>(d);
    }
    kvstream::base::FuzzCheck(static_cast<int64_t>(numel) == view.numel());
    kvstream::base::FuzzCheck(view.nbytes == numel * kvstream::model::StDTypeBytes(view.dtype));
    kvstream::base::FuzzCheck(view.data >= buffer && view.data <= end &&
                              view.nbytes <= static_cast<uint64_t>(end - view.data));
    for (uint64_t i = 0; i < view.nbytes; ++i) sink = sink ^ view.data[i];
    ranges.emplace_back(view.data, view.data + view.nbytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    kvstream::base::FuzzCheck(ranges[i].first >= ranges[i - 1].second);
  return 0;
}
