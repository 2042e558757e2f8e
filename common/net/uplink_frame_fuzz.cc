// libFuzzer target for net::UplinkFrame, the cloud's reader of uplink messages. Input: a
// control byte (how the message is cut into slices: from one byte to a few hundred) +
// the serialized Uplink.
//
// Invariants checked on every input: the frame accepts exactly what protobuf's parse of
// the same bytes accepts, and reads the same message (with a held payload put back, it
// serializes as protobuf's does); a held payload leaves the message's own empty; the CRC
// of the held payload, run across the slices, is the CRC of protobuf's payload string.
// And, since inputs are short: the input repeated past three CRC lanes' worth (24 KiB)
// and cut into ranges of up to 9 KiB has the same CRC across the ranges as in one buffer.
//
// Build and run: docs/fuzzing.md. The committed corpus (uplink_frame_fuzz_corpus/) also
// runs as a regression test (tests/common/net/uplink_frame_fuzz_corpus_test.cc).
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/base/fuzz_check.h"
#include "common/codec/crc32c.h"
#include "common/net/uplink_frame.h"

namespace {

// Offsets cutting `size` bytes into pieces of 1..max_part bytes, drawn from `seed`.
std::vector<size_t> Cuts(size_t size, size_t max_part, uint32_t seed) {
  std::vector<size_t> cuts;
  for (size_t at = 0;;) {
    seed = seed * 1103515245u + 12345u;
    at += 1 + (seed >> 16) % max_part;
    if (at >= size) return cuts;
    cuts.push_back(at);
  }
}

void CheckCrcAcrossRanges(const std::string& bytes, uint8_t control) {
  std::string tiled;
  while (tiled.size() < 3 * 8192 + 97u * control) {
    tiled += bytes.empty() ? std::string(1, static_cast<char>(control)) : bytes;
  }
  std::vector<absl::string_view> parts;
  size_t from = 0;
  for (size_t to : Cuts(tiled.size(), 1 + (131u * control) % 9000, control)) {
    parts.push_back(absl::string_view(tiled).substr(from, to - from));
    from = to;
  }
  parts.push_back(absl::string_view(tiled).substr(from));
  kvstream::base::FuzzCheck(kvstream::codec::Crc32c(absl::MakeConstSpan(parts), control) ==
                            kvstream::codec::Crc32cPortable(tiled.data(), tiled.size(), control));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  using kvstream::base::FuzzCheck;
  google::protobuf::LogSilencer quiet;  // protobuf logs each invalid UTF-8 string it refuses
  const uint8_t control = data[0];
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  CheckCrcAcrossRanges(bytes, control);
  const std::vector<size_t> cuts =
      Cuts(bytes.size(), 1 + (control & 63) * ((control & 64) != 0 ? 7 : 1), control);
  kvstream::v1::Uplink want;
  const bool ok = want.ParseFromString(bytes);
  kvstream::net::UplinkFrame frame;
  FuzzCheck(frame.ParseSlices(bytes, cuts).ok() == ok);
  if (!ok) return 0;
  kvstream::v1::Uplink rebuilt = frame.message;
  if (frame.held()) {
    FuzzCheck(frame.message.chunk().payload().empty());
    rebuilt.mutable_chunk()->set_payload(frame.payload().Flatten());
  }
  FuzzCheck(rebuilt.SerializeAsString() == want.SerializeAsString());
  const std::string& payload = want.chunk().payload();
  FuzzCheck(frame.payload().Crc32c() == kvstream::codec::Crc32c(payload.data(), payload.size()));
  return 0;
}
