// Runs the committed corpus of the quality-table fuzz target
// (common/control/quality_table_fuzz.cc) as a regression test.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/control/controller.h"
#include "tests/support/fuzz_corpus.h"

namespace {

constexpr char kCorpus[] = "common/control/quality_table_fuzz_corpus";

TEST(QualityTableFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts = kvstream::testing::RunFuzzCorpus(kCorpus, [](const std::string& text) {
    return kvstream::control::ParseQualityTable(text, "corpus").status();
  });
  EXPECT_GE(counts.files, 10);
  EXPECT_GE(counts.valid, 2);
  EXPECT_GE(counts.bad, 5);
}

// Fields of the wrong JSON type were once an uncaught nlohmann::json::type_error (found
// by the fuzz target); they are INVALID_ARGUMENT.
TEST(QualityTableFuzzCorpusTest, WrongFieldTypesAreErrorsNotExceptions) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kCorpus)) {
    if (entry.path().filename().string().rfind("wrong_type_", 0) != 0) continue;
    SCOPED_TRACE(entry.path().string());
    const std::string text = kvstream::testing::ReadCorpusFile(entry.path());
    auto table = kvstream::control::ParseQualityTable(text, "corpus");
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument) << table.status();
    ++files;
  }
  EXPECT_GE(files, 3);
}

}  // namespace
