#include "common/codec/payload.h"

#include <algorithm>
#include <cstring>

#include "common/codec/crc32c.h"

namespace kvstream::codec {

PayloadView::PayloadView(absl::string_view whole)
    : PayloadView(absl::Span<const absl::string_view>(&whole, 1)) {}

PayloadView::PayloadView(absl::Span<const absl::string_view> parts) {
  parts_.reserve(parts.size());
  starts_.reserve(parts.size());
  for (absl::string_view p : parts) {
    if (p.empty()) continue;
    parts_.push_back(p);
    starts_.push_back(size_);
    size_ += p.size();
  }
}

PayloadView& PayloadView::operator=(PayloadView&& other) noexcept {
  if (this != &other) {
    parts_ = std::move(other.parts_);
    starts_ = std::move(other.starts_);
    size_ = std::exchange(other.size_, 0);
    other.parts_.clear();
    other.starts_.clear();
  }
  return *this;
}

uint32_t PayloadView::Crc32c() const { return codec::Crc32c(absl::MakeConstSpan(parts_)); }

size_t PayloadView::PartAt(uint64_t offset) const {
  return static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), offset) -
                             starts_.begin()) -
         1;
}

template <typename Fn>
void PayloadView::ForEachPiece(uint64_t offset, uint64_t n, Fn fn) const {
  if (n == 0) return;
  for (size_t i = PartAt(offset); n > 0; ++i) {
    const uint64_t skip = offset - starts_[i];
    const uint64_t take = std::min<uint64_t>(n, parts_[i].size() - skip);
    fn(parts_[i].substr(skip, take));
    offset += take;
    n -= take;
  }
}

bool PayloadView::CopyOut(uint64_t offset, uint64_t n, void* dst) const {
  if (offset > size_ || n > size_ - offset) return false;
  auto* out = static_cast<char*>(dst);
  ForEachPiece(offset, n, [&out](absl::string_view piece) {
    std::memcpy(out, piece.data(), piece.size());
    out += piece.size();
  });
  return true;
}

const uint8_t* PayloadView::Get(uint64_t offset, uint64_t n, std::string* scratch) const {
  if (offset > size_ || n > size_ - offset) return nullptr;
  if (n == 0 || size_ == 0) {
    scratch->clear();
    return reinterpret_cast<const uint8_t*>(scratch->data());
  }
  const size_t i = PartAt(offset);
  const uint64_t skip = offset - starts_[i];
  if (parts_[i].size() - skip >= n) {
    return reinterpret_cast<const uint8_t*>(parts_[i].data() + skip);
  }
  scratch->resize(n);
  CopyOut(offset, n, scratch->data());
  return reinterpret_cast<const uint8_t*>(scratch->data());
}

std::string PayloadView::Flatten() const {
  std::string out(size_, '\0');
  CopyOut(0, size_, out.data());
  return out;
}

PayloadView PayloadView::Sub(uint64_t offset, uint64_t n) const {
  if (offset > size_ || n > size_ - offset) return PayloadView();
  std::vector<absl::string_view> pieces;
  ForEachPiece(offset, n, [&pieces](absl::string_view piece) { pieces.push_back(piece); });
  return PayloadView(pieces);
}

}  // namespace kvstream::codec
