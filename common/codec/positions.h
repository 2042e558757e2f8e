// Kept token positions on the wire: the first position as a LEB128 varint, then each gap
// to the previous position (>= 1, positions strictly increase) as a varint.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::codec {

// `positions` must be strictly increasing and non-negative.
std::string EncodePositions(const std::vector<int32_t>& positions);

// Decodes exactly `count` positions, all < `limit`; rejects truncated or overlong varints,
// varints not in their shortest form (so a list of positions has one encoding), trailing
// bytes and gaps of 0.
absl::StatusOr<std::vector<int32_t>> DecodePositions(absl::string_view bytes, uint32_t count,
                                                     int64_t limit);

// Positions in runs (importance tiers, common/codec/spec.h Plan::tiers): each run
// strictly increasing and encoded as above, its first position written whole; runs
// follow one another with nothing between them. The runs may interleave, but no position
// may appear twice. The run lengths should sum to positions.size() (runs past the end
// are cut short).
std::string EncodePositionRuns(const std::vector<int32_t>& positions,
                               const std::vector<uint32_t>& run_lengths);
absl::StatusOr<std::vector<int32_t>> DecodePositionRuns(absl::string_view bytes,
                                                        const std::vector<uint32_t>& run_lengths,
                                                        int64_t limit);

}  // namespace kvstream::codec
