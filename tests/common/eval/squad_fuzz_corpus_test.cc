// Runs the committed corpus of the SQuAD reader's fuzz target (common/eval/squad_fuzz.cc)
// as a regression test.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/eval/tasks.h"
#include "tests/support/fuzz_corpus.h"

namespace {

constexpr char kCorpus[] = "common/eval/squad_fuzz_corpus";

TEST(SquadFuzzCorpusTest, EverySeedRunsAndNamedSeedsParseAsNamed) {
  const auto counts = kvstream::testing::RunFuzzCorpus(kCorpus, [](const std::string& text) {
    return kvstream::eval::FromSquadJson(text, "corpus").status();
  });
  EXPECT_GE(counts.files, 100);
  EXPECT_GE(counts.valid, 2);
  EXPECT_GE(counts.bad, 6);
}

// Fields of the wrong JSON type were once an uncaught nlohmann::json::type_error; they
// are INVALID_ARGUMENT.
TEST(SquadFuzzCorpusTest, WrongFieldTypesAreErrorsNotExceptions) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kCorpus)) {
    if (entry.path().filename().string().rfind("wrong_type_", 0) != 0) continue;
    SCOPED_TRACE(entry.path().string());
    const std::string text = kvstream::testing::ReadCorpusFile(entry.path());
    auto examples = kvstream::eval::FromSquadJson(text, "corpus");
    EXPECT_EQ(examples.status().code(), absl::StatusCode::kInvalidArgument) << examples.status();
    ++files;
  }
  EXPECT_GE(files, 6);
}

}  // namespace
