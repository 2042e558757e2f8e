#include "common/base/memory.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>

#if defined(__SANITIZE_ADDRESS__)
#define KVSTREAM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVSTREAM_ASAN 1
#endif
#endif

namespace kvstream::base {
namespace {

TEST(MemoryTest, OperatorsEnvironmentWins) {
  ASSERT_EQ(setenv("MALLOC_TRIM_THRESHOLD_", "131072", 1), 0);
  EXPECT_NE(KeepFreedMemoryForReuse().find("kept as given"), std::string::npos);
  ASSERT_EQ(unsetenv("MALLOC_TRIM_THRESHOLD_"), 0);
}

TEST(MemoryTest, FreedBlocksStayInTheHeapForReuse) {
  ASSERT_EQ(unsetenv("MALLOC_MMAP_THRESHOLD_"), 0);
  ASSERT_EQ(unsetenv("MALLOC_TRIM_THRESHOLD_"), 0);
  const std::string said = KeepFreedMemoryForReuse();
#ifdef KVSTREAM_ASAN
  // ASan's allocator replaces glibc's: mallopt is refused, and the log line says so.
  EXPECT_NE(said.find("refused"), std::string::npos) << said;
#else
  EXPECT_NE(said.find("kept for reuse"), std::string::npos) << said;
  const struct mallinfo2 before = mallinfo2();
  // 16 MiB, above glibc's default mmap threshold: now from the heap, not a fresh mmap.
  const size_t size = 16u << 20;
  char* p = static_cast<char*>(std::malloc(size));
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, size);
  EXPECT_EQ(mallinfo2().hblks, before.hblks) << "a 16 MiB block was mmap()ed on its own";
  std::free(p);
  // Freed, it stays in the heap (not trimmed back to the system) for the next request.
  EXPECT_GE(mallinfo2().fordblks, size);
#endif
}

}  // namespace
}  // namespace kvstream::base
