// libFuzzer target for plan and spec strings (spec.h's grammar). Input: the string.
//
// Invariants checked on every string that parses:
//   - ParseTensorSpec: the spec validates, and its canonical string parses to an equal spec;
//   - ParsePlan: every spec validates, ranges are 0 <= first <= last, the zstd level is
//     0..22; the canonical string parses to a plan with the same canonical string and the
//     same spec for every layer (probed at 0..8 and around every override's ends); and
//     Validate(n) holds exactly when every override ends below n.
//
// Build and run: docs/fuzzing.md. The committed corpus (plan_fuzz_corpus/) also runs as a
// regression test (tests/common/codec/plan_fuzz_corpus_test.cc).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "common/base/fuzz_check.h"
#include "common/codec/spec.h"

namespace {

using kvstream::codec::Plan;

void CheckSpec(const kvstream::codec::TensorSpec& spec) {
  kvstream::base::FuzzCheck(spec.Validate().ok());
  auto again = kvstream::codec::ParseTensorSpec(spec.ToString());
  kvstream::base::FuzzCheck(again.ok() && *again == spec);
}

void CheckPlan(const Plan& plan) {
  CheckSpec(plan.base.k);
  CheckSpec(plan.base.v);
  kvstream::base::FuzzCheck(plan.zstd_level >= 0 && plan.zstd_level <= 22);
  std::set<int64_t> probes = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  int64_t max_last = -1;
  for (const Plan::Override& o : plan.overrides) {
    kvstream::base::FuzzCheck(0 <= o.first && o.first <= o.last && (o.k || o.v));
    if (o.k) CheckSpec(*o.k);
    if (o.v) CheckSpec(*o.v);
    for (int64_t l :
         {int64_t{o.first} - 1, int64_t{o.first}, int64_t{o.last}, int64_t{o.last} + 1}) {
      if (l >= 0 && l <= INT32_MAX) probes.insert(l);
    }
    if (o.last > max_last) max_last = o.last;
  }

  const std::string text = plan.ToString();
  auto again = kvstream::codec::ParsePlan(text);
  kvstream::base::FuzzCheck(again.ok() && again->ToString() == text &&
                            again->zstd_level == plan.zstd_level);
  for (int64_t l : probes) {
    kvstream::base::FuzzCheck(again->ForLayer(static_cast<int>(l)) ==
                              plan.ForLayer(static_cast<int>(l)));
  }
  for (int n : {1, 4, 64}) kvstream::base::FuzzCheck(plan.Validate(n).ok() == (max_last < n));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (auto spec = kvstream::codec::ParseTensorSpec(text); spec.ok()) CheckSpec(*spec);
  if (auto plan = kvstream::codec::ParsePlan(text); plan.ok()) CheckPlan(*plan);
  return 0;
}
