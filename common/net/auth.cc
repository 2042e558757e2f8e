#include "common/net/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/status.h"

namespace kvstream::net {
namespace {

std::string Sha256Raw(absl::string_view data) {
  unsigned char out[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out);
  return std::string(reinterpret_cast<const char*>(out), sizeof(out));
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string Sha256Hex(absl::string_view data) { return absl::BytesToHexString(Sha256Raw(data)); }

absl::StatusOr<std::vector<TokenAuthenticator::Entry>> TokenAuthenticator::Parse(
    const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(path, "token file"));
  std::vector<Entry> entries;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    const bool hex = fields.size() == 2 && fields[1].size() == 64 &&
                     std::all_of(fields[1].begin(), fields[1].end(),
                                 [](char c) { return absl::ascii_isxdigit(c); });
    if (!hex) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": expected 'TENANT SHA256HEX' (64 hex digits), found ",
                       fields.size(), " fields"));
    }
    entries.push_back(
        {std::string(fields[0]), absl::HexStringToBytes(absl::AsciiStrToLower(fields[1]))});
  }
  return entries;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Load(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<Entry> entries, Parse(path));
  std::unique_ptr<TokenAuthenticator> a(new TokenAuthenticator());
  a->path_ = path;
  a->entries_ = std::move(entries);
  return a;
}

absl::Status TokenAuthenticator::Reload() {
  ASSIGN_OR_RETURN(std::vector<Entry> entries, Parse(path_));
  std::lock_guard<std::mutex> lock(mu_);
  entries_ = std::move(entries);
  return absl::OkStatus();
}

size_t TokenAuthenticator::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

absl::StatusOr<std::string> TokenAuthenticator::Check(const grpc::ServerContext& context) const {
  const auto& md = context.client_metadata();
  const auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError(
        "no 'authorization: Bearer TOKEN' metadata; this daemon requires a token");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (value.substr(0, kBearer.size()) != kBearer || value.size() == kBearer.size()) {
    return absl::UnauthenticatedError("authorization metadata: expected 'Bearer TOKEN'");
  }
  const std::string presented = Sha256Raw(value.substr(kBearer.size()));
  std::lock_guard<std::mutex> lock(mu_);
  const std::string* tenant = nullptr;
  for (const Entry& e : entries_) {  // every entry, whatever matches: no early exit
    if (CRYPTO_memcmp(e.hash.data(), presented.data(), presented.size()) == 0) tenant = &e.tenant;
  }
  if (tenant == nullptr) return absl::UnauthenticatedError("the bearer token is not accepted here");
  return *tenant;
}

absl::StatusOr<std::string> ReadBearerToken(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(path, "token file"));
  const std::string token(absl::StripAsciiWhitespace(text));
  if (token.empty())
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is empty"));
  return token;
}

void AddBearer(grpc::ClientContext& context, const std::string& token) {
  if (!token.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

}  // namespace kvstream::net
