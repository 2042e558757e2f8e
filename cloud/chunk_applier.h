// Applies a session's KV chunks on a thread of their own, so the stream's reader can take
// and acknowledge the next chunk while this one is decoded into the cache: the transfer
// runs at the speed of the wire, and decoding overlaps it instead of adding to it. The
// queue is bounded in bytes, so a decoder slower than the link pushes back through gRPC
// flow control instead of buffering the whole cache.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "absl/status/status.h"

namespace kvstream::cloud {

class ChunkApplier {
 public:
  // Applies one chunk (which it owns); runs on the applier's thread, in the order pushed.
  using Apply = std::function<absl::Status()>;

  explicit ChunkApplier(uint64_t max_queued_bytes);
  // Applies what is queued, then joins.
  ~ChunkApplier();
  ChunkApplier(const ChunkApplier&) = delete;
  ChunkApplier& operator=(const ChunkApplier&) = delete;

  // Queues a chunk, waiting while it would take the bytes queued or being applied past
  // max_queued_bytes (with none pending, any chunk is taken). Returns the first error `apply`
  // returned so far: once one has, nothing more is applied. `bytes`: the chunk's size.
  absl::Status Push(uint64_t bytes, Apply apply);
  // Waits until every queued chunk is applied; returns the first error.
  absl::Status Drain();

 private:
  void Run();

  struct Item {
    uint64_t bytes;
    Apply apply;
  };
  const uint64_t max_queued_bytes_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Item> queue_;
  uint64_t queued_bytes_ = 0;
  bool busy_ = false;  // a chunk is being applied
  bool stop_ = false;
  absl::Status error_;
  std::thread worker_;
};

}  // namespace kvstream::cloud
