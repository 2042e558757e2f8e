#include "common/base/memory.h"

#include <malloc.h>

#include <cstdlib>

namespace kvstream::base {

std::string KeepFreedMemoryForReuse() {
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr ||
      std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr) {
    return "allocator: MALLOC_* environment settings kept as given";
  }
#ifdef M_MMAP_THRESHOLD
  const bool ok =
      mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  return ok ? "allocator: freed memory kept for reuse (mmap threshold 32 MiB, trim threshold 1 GiB)"
            : "allocator: mallopt refused the settings; glibc defaults in use";
#else
  return "allocator: not glibc; defaults in use";
#endif
}

std::string LimitArenas(int arenas) {
  if (std::getenv("MALLOC_ARENA_MAX") != nullptr) {
    return "allocator: MALLOC_ARENA_MAX kept as given";
  }
#ifdef M_ARENA_MAX
  if (mallopt(M_ARENA_MAX, arenas) == 1) {
    return "allocator: at most " + std::to_string(arenas) + " malloc arenas";
  }
  return "allocator: mallopt refused the arena cap; glibc's default in use";
#else
  (void)arenas;
  return "allocator: not glibc; arena count not capped";
#endif
}

}  // namespace kvstream::base
