// For libFuzzer targets: a property the target checks on what a parser accepted. A
// violation aborts, which the fuzzer reports as a crash with its input.
#pragma once

#include <cstdlib>

namespace kvstream::base {

inline void FuzzCheck(bool ok) {
  if (!ok) std::abort();
}

}  // namespace kvstream::base
