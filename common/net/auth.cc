#include "common/net/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/quote.h"
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

// One "key=value" right or quota of a token file line, into `t`.
absl::Status ParseRight(absl::string_view field, Tenant& t) {
  const size_t eq = field.find('=');
  const absl::string_view key = field.substr(0, eq);
  const absl::string_view value = eq == absl::string_view::npos ? "" : field.substr(eq + 1);
  uint64_t n = 0;
  if (key == "models" && !value.empty()) {
    for (absl::string_view m : absl::StrSplit(value, ',', absl::SkipEmpty()))
      t.models.emplace_back(m);
    return absl::OkStatus();
  }
  if ((key == "max_sessions" || key == "max_cache_bytes") && absl::SimpleAtoi(value, &n) && n > 0 &&
      (key != "max_sessions" || n <= 1000000)) {
    if (key == "max_sessions") t.max_sessions = static_cast<uint32_t>(n);
    if (key == "max_cache_bytes") t.max_cache_bytes = n;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("expected models=A,B, max_sessions=N or max_cache_bytes=N (N > 0), found ",
                   base::Quote(field)));
}

}  // namespace

bool Tenant::MayUse(const std::string& model) const {
  return models.empty() || std::find(models.begin(), models.end(), model) != models.end();
}

std::string Sha256Hex(absl::string_view data) { return absl::BytesToHexString(Sha256Raw(data)); }

absl::StatusOr<std::vector<TokenAuthenticator::Entry>> TokenAuthenticator::Parse(
    absl::string_view text, const std::string& path) {
  std::vector<Entry> entries;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipWhitespace());
    const bool hex = fields.size() >= 2 && fields[1].size() == 64 &&
                     std::all_of(fields[1].begin(), fields[1].end(),
                                 [](char c) { return absl::ascii_isxdigit(c); });
    if (!hex) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", line_no,
          ": expected 'TENANT SHA256HEX [models=A,B] [max_sessions=N] [max_cache_bytes=N]' (64 "
          "hex digits), found ",
          fields.size(), " fields"));
    }
    Entry e;
    e.tenant.name = std::string(fields[0]);
    e.hash = absl::HexStringToBytes(absl::AsciiStrToLower(fields[1]));
    for (size_t f = 2; f < fields.size(); ++f) {
      if (absl::Status st = ParseRight(fields[f], e.tenant); !st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": ", st.message()));
      }
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Load(
    const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(path, "token file"));
  return FromText(text, path);
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::FromText(
    absl::string_view text, const std::string& source) {
  ASSIGN_OR_RETURN(std::vector<Entry> entries, Parse(text, source));
  std::unique_ptr<TokenAuthenticator> a(new TokenAuthenticator());
  a->path_ = source;
  a->entries_ = std::move(entries);
  return a;
}

absl::Status TokenAuthenticator::Reload() {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(path_, "token file"));
  ASSIGN_OR_RETURN(std::vector<Entry> entries, Parse(text, path_));
  std::lock_guard<std::mutex> lock(mu_);
  entries_ = std::move(entries);
  return absl::OkStatus();
}

size_t TokenAuthenticator::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

absl::StatusOr<Tenant> TokenAuthenticator::Check(const grpc::ServerContext& context) const {
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
  return Lookup(value.substr(kBearer.size()));
}

absl::StatusOr<Tenant> TokenAuthenticator::Lookup(absl::string_view token) const {
  const std::string presented = Sha256Raw(token);
  std::lock_guard<std::mutex> lock(mu_);
  const Tenant* tenant = nullptr;
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
