// libFuzzer target for the SQuAD reader (FromSquadJson). Input: the file's JSON text.
//
// Invariants checked on every file that parses: no more examples than the questions in
// it, and every example has a question, at least one answer and the kind its article's
// title names (single, multi, multi_lives, needle or squad).
//
// A field of the wrong type ("title": 1, "is_impossible": "no", a question that is not an
// object) once escaped as nlohmann::json::type_error; the corpus files named wrong_type_*
// reproduce it and are INVALID_ARGUMENT now (tests/common/eval/squad_fuzz_corpus_test.cc).
//
// Build and run: docs/fuzzing.md. The committed corpus (squad_fuzz_corpus/) also runs as
// a regression test.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/base/fuzz_check.h"
#include "common/eval/tasks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto examples = kvstream::eval::FromSquadJson(text, "fuzz");
  if (!examples.ok()) return 0;
  kvstream::base::FuzzCheck(examples->size() <= size / 8);
  for (const kvstream::eval::Example& ex : *examples) {
    kvstream::base::FuzzCheck(!ex.question.empty() && !ex.answers.empty());
    kvstream::base::FuzzCheck(kvstream::eval::IsGeneratedKind(ex.kind) || ex.kind == "squad");
  }
  return 0;
}
