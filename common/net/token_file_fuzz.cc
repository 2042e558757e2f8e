// libFuzzer target for bearer-token files (TokenAuthenticator::FromText). Input: the
// file's text.
//
// Invariants checked on every file that parses: one entry per line that is neither
// blank nor a comment; quotas within their bounds (max_sessions at most 1,000,000);
// the empty token and a token that is not any line's preimage are UNAUTHENTICATED.
//
// Build and run: docs/fuzzing.md. The committed corpus (token_file_fuzz_corpus/) also
// runs as a regression test (tests/common/net/token_file_fuzz_corpus_test.cc).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "common/base/fuzz_check.h"
#include "common/net/auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto auth = kvstream::net::TokenAuthenticator::FromText(text, "fuzz");
  if (!auth.ok()) return 0;
  size_t lines = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty() && line[0] != '#') ++lines;
  }
  kvstream::base::FuzzCheck((*auth)->size() == lines);
  kvstream::base::FuzzCheck(absl::IsUnauthenticated((*auth)->Lookup("").status()));
  // "kvstream-fuzz-probe" hashes to no line a fuzzer can be expected to write.
  const auto probe = (*auth)->Lookup("kvstream-fuzz-probe");
  kvstream::base::FuzzCheck(absl::IsUnauthenticated(probe.status()) ||
                            text.find(kvstream::net::Sha256Hex("kvstream-fuzz-probe")) !=
                                std::string::npos);
  return 0;
}
