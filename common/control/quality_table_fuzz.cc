// libFuzzer target for quality tables (ParseQualityTable). Input: the table's JSON text.
//
// Invariants checked on every table that parses: at least one point and no more than
// array entries; no two points alike (rows for one point from several task kinds are
// merged); retention in (0, 1]; the spec of every kv / projected point parses as a plan.
//
// A field of the wrong type ("selector": 1, "retention": "x", "spec": 2) once escaped as
// nlohmann::json::type_error; the corpus files named wrong_type_* reproduce it and are
// INVALID_ARGUMENT now (tests/common/control/quality_table_fuzz_corpus_test.cc).
//
// Build and run: docs/fuzzing.md. The committed corpus (quality_table_fuzz_corpus/) also
// runs as a regression test (tests/common/control/quality_table_fuzz_corpus_test.cc).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "common/base/fuzz_check.h"
#include "common/codec/spec.h"
#include "common/control/controller.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<std::vector<kvstream::control::OperatingPoint>> table =
      kvstream::control::ParseQualityTable(text, "fuzz");
  if (!table.ok()) return 0;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  kvstream::base::FuzzCheck(!table->empty() && j.is_array() && table->size() <= j.size());
  for (size_t i = 0; i < table->size(); ++i) {
    const kvstream::control::OperatingPoint& p = (*table)[i];
    kvstream::base::FuzzCheck(p.retention > 0 && p.retention <= 1);
    if (p.mode == kvstream::v1::MODE_KV || p.mode == kvstream::v1::MODE_PROJECTED) {
      kvstream::base::FuzzCheck(kvstream::codec::ParsePlan(p.spec).ok());
    }
    for (size_t k = 0; k < i; ++k) {
      const kvstream::control::OperatingPoint& q = (*table)[k];
      kvstream::base::FuzzCheck(!(q.mode == p.mode && q.selector == p.selector &&
                                  q.retention == p.retention && q.spec == p.spec));
    }
  }
  return 0;
}
