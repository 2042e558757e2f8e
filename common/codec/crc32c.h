// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and gRPC.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvstream::codec {

// Extends `crc` (0 for a fresh computation) over data[0..n). Uses the CPU's crc32
// instruction where it has one (x86-64 with SSE4.2), else Crc32cPortable.
uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0);
// The same over the concatenation of `parts`: the three lanes run on across range
// boundaries, so ranges of a few KiB (gRPC's slices) are checked about as fast as one
// buffer; the last 24 KiB or less go range by range in one chain.
uint32_t Crc32c(absl::Span<const absl::string_view> parts, uint32_t crc = 0);
// The same in portable C++ (slicing by 8), for CPUs without the instruction and for tests.
uint32_t Crc32cPortable(const void* data, size_t n, uint32_t crc = 0);

}  // namespace kvstream::codec
