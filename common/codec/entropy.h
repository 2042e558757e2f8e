// The entropy stage: zstd over a chunk's packed payload, or nothing.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::codec {

// Compresses `raw` at `level` (1..22) into a single zstd frame that records its size.
absl::StatusOr<std::string> ZstdCompress(absl::string_view raw, int level);

// Decompresses a single frame that must decode to exactly `expected_size` bytes. The size
// is checked against the frame header before any memory is allocated for it.
absl::StatusOr<std::string> ZstdDecompress(absl::string_view frame, uint64_t expected_size);

}  // namespace kvstream::codec
