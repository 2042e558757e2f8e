// Sends KvChunks on a CloudTransfer from a thread of its own while the caller produces
// them (the scout's prefill encodes each layer as soon as it is computed): the transfer
// of layer l overlaps the computation of layer l + 1. The thread is joined by Close()
// or, on any other way out, by the destructor.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "edge/transfer.h"
#include "kvstream/v1/kv_chunk.pb.h"

namespace kvstream::edge {

class LayerSender {
 public:
  // `transfer` must have sent its SessionOpen; only this sender sends on it until Close.
  explicit LayerSender(CloudTransfer& transfer);
  ~LayerSender();
  LayerSender(const LayerSender&) = delete;
  LayerSender& operator=(const LayerSender&) = delete;

  // Queues chunks to send after those queued before.
  void Push(std::vector<net::SharedChunk> chunks);
  // No more chunks: waits until every queued chunk was sent or the stream broke, and
  // returns whether all were sent. Chunks queued after a break are dropped.
  bool Close();
  // False once a send failed (the stream broke).
  bool ok() const { return ok_.load(); }

 private:
  void Run();

  CloudTransfer& transfer_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<net::SharedChunk> queue_;
  bool closed_ = false;
  std::atomic<bool> ok_{true};
  std::thread thread_;
};

}  // namespace kvstream::edge
