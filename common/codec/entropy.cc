#include "common/codec/entropy.h"

#include <zstd.h>

#include "absl/strings/str_cat.h"

namespace kvstream::codec {

absl::StatusOr<std::string> ZstdCompress(absl::string_view raw, int level) {
  std::string out(ZSTD_compressBound(raw.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), level);
  if (ZSTD_isError(n)) {
    return absl::InternalError(absl::StrCat("zstd compress: ", ZSTD_getErrorName(n)));
  }
  out.resize(n);
  return out;
}

absl::StatusOr<std::string> ZstdDecompress(absl::string_view frame, uint64_t expected_size) {
  const unsigned long long declared = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR) {
    return absl::InvalidArgumentError("zstd: payload is not a zstd frame");
  }
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN) {
    return absl::InvalidArgumentError("zstd: frame does not declare its content size");
  }
  if (declared != expected_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("zstd: frame declares ", declared, " bytes, expected ", expected_size));
  }
  std::string out(expected_size, '\0');
  const size_t n = ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) {
    return absl::InvalidArgumentError(absl::StrCat("zstd: ", ZSTD_getErrorName(n)));
  }
  if (n != expected_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("zstd: decoded ", n, " bytes, expected ", expected_size));
  }
  return out;
}

}  // namespace kvstream::codec
