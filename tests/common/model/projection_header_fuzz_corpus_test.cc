// Runs the committed corpus of the projection header fuzz target
// (common/model/projection_header_fuzz.cc) as a regression test. A file is a control
// byte, then the JSON header alone (bit 0 clear) or a whole safetensors image (bit 0 set).
#include <gtest/gtest.h>

#include "common/model/projection_header.h"
#include "common/model/safetensors.h"
#include "tests/support/fuzz_corpus.h"

namespace {

absl::Status Parse(const std::string& data) {
  if (data.empty()) return absl::InvalidArgumentError("empty");
  const std::string rest = data.substr(1);
  if (!(data[0] & 1)) return kvstream::model::ParseProjectionHeader(rest).status();
  std::string header;
  auto tensors = kvstream::model::ParseSafetensors(reinterpret_cast<const uint8_t*>(rest.data()),
                                                   rest.size(), "corpus", &header);
  if (!tensors.ok()) return tensors.status();
  return kvstream::model::ReadProjectionHeader(header, *tensors).status();
}

TEST(ProjectionHeaderFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts =
      kvstream::testing::RunFuzzCorpus("common/model/projection_header_fuzz_corpus", Parse);
  EXPECT_GE(counts.files, 10);
  EXPECT_GE(counts.valid, 4);
  EXPECT_GE(counts.bad, 6);
}

}  // namespace
