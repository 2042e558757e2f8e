// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and gRPC.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvstream::codec {

// Extends `crc` (0 for a fresh computation) over data[0..n).
uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace kvstream::codec
