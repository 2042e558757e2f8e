// Runs the committed corpus of the uplink frame fuzz target (common/net/uplink_frame_fuzz.cc)
// as a regression test.
#include <gtest/gtest.h>

#include "common/net/uplink_frame.h"
#include "tests/support/fuzz_corpus.h"

namespace {

TEST(UplinkFrameFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts = kvstream::testing::RunFuzzCorpus(
      "common/net/uplink_frame_fuzz_corpus", [](const std::string& data) {
        kvstream::net::UplinkFrame frame;
        const grpc::Status st = frame.ParseSlices(data.substr(1), {});
        return st.ok() ? absl::OkStatus() : absl::InvalidArgumentError(st.error_message());
      });
  EXPECT_GE(counts.files, 10);
  EXPECT_GE(counts.valid, 6);
  EXPECT_GE(counts.bad, 3);
}

}  // namespace
