// libFuzzer target for quality tables (ParseQualityTable). Input: the table's JSON text.
//
// Invariants checked on every table that parses: at least one point and no more than
// array entries; no two points alike (rows for one point from several task kinds are
// merged); retention in (0, 1]; the spec of every kv / projected point parses as a plan;
// every point holds one band per row (as many bands as entries in all), each with a
// length range min <= max and a quality in [0, 1], and its quality is the lowest band's;
// priced at any prompt length (AtPromptLength) a point's quality is one of its bands'
// and never below the lowest.
//
// A field of the wrong type ("selector": 1, "retention": "x", "spec": 2) once escaped as
// nlohmann::json::type_error; the corpus files named wrong_type_* reproduce it and are
// INVALID_ARGUMENT now (tests/common/control/quality_table_fuzz_corpus_test.cc).
//
// Build and run: docs/fuzzing.md. The committed corpus (quality_table_fuzz_corpus/) also
// runs as a regression test (tests/common/control/quality_table_fuzz_corpus_test.cc).
#include <algorithm>
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
  size_t bands = 0;
  for (size_t i = 0; i < table->size(); ++i) {
    const kvstream::control::OperatingPoint& p = (*table)[i];
    kvstream::base::FuzzCheck(p.retention > 0 && p.retention <= 1);
    if (p.mode == kvstream::v1::MODE_KV || p.mode == kvstream::v1::MODE_PROJECTED) {
      kvstream::base::FuzzCheck(kvstream::codec::ParsePlan(p.spec).ok());
    }
    kvstream::base::FuzzCheck(!p.bands.empty());
    double lowest = 1;
    for (const kvstream::control::QualityBand& b : p.bands) {
      kvstream::base::FuzzCheck(b.min_tokens <= b.max_tokens && b.quality >= 0 && b.quality <= 1);
      lowest = std::min(lowest, b.quality);
    }
    kvstream::base::FuzzCheck(p.quality == lowest);
    bands += p.bands.size();
    for (int n : {1, 500, 1 << 20}) {
      const double q = kvstream::control::AtPromptLength({p}, n)[0].quality;
      kvstream::base::FuzzCheck(q >= lowest &&
                                std::any_of(p.bands.begin(), p.bands.end(),
                                            [q](const auto& b) { return b.quality == q; }));
    }
    for (size_t k = 0; k < i; ++k) {
      const kvstream::control::OperatingPoint& q = (*table)[k];
      kvstream::base::FuzzCheck(!(q.mode == p.mode && q.selector == p.selector &&
                                  q.retention == p.retention && q.spec == p.spec));
    }
  }
  kvstream::base::FuzzCheck(bands == j.size());
  return 0;
}
