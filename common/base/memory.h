// Allocator settings for processes that run model forward passes.
//
// A prefill allocates and frees the same few megabytes of activations, attention scores
// and cache tensors on every request. glibc's malloc serves blocks above a dynamic
// threshold with fresh mmap()s and returns freed heap tops to the system, so each
// request pays page faults again for memory it just gave back. Measured on the tiny
// scout (512 tokens, 2 cores): prefill 20-245 ms from one call to the next with the
// defaults, 22-36 ms once freed memory is kept for reuse.
#pragma once

#include <string>

namespace kvstream::base {

// Keeps freed memory in the process for reuse: blocks up to 32 MiB come from the heap
// (not per-allocation mmap), and the heap is trimmed only when over 1 GiB is free at
// its top. A process's footprint then stays near its peak, as with tcmalloc or
// jemalloc. Does nothing where the environment already sets MALLOC_MMAP_THRESHOLD_ or
// MALLOC_TRIM_THRESHOLD_ (the operator's choice wins). Returns a line for the log.
std::string KeepFreedMemoryForReuse();

// Caps glibc's malloc arenas at `arenas` (> 0). glibc's default allows 8 per core, and
// each thread that ever contended gets its own arena whose freed memory stays with it:
// under a 64-request burst the edge's RSS settled at 438-466 MB with the default and
// 227 MB with 2 arenas, with the same latencies (tests/e2e/load_test.cc, tiny models,
// 2 cores). Call before model threads start. Does nothing where MALLOC_ARENA_MAX is set
// in the environment. Returns a line for the log.
std::string LimitArenas(int arenas);

}  // namespace kvstream::base
