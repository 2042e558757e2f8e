#include "edge/layer_sender.h"

#include <utility>

namespace kvstream::edge {

LayerSender::LayerSender(CloudTransfer& transfer)
    : transfer_(transfer), thread_([this] { Run(); }) {}

LayerSender::~LayerSender() { Close(); }

void LayerSender::Push(std::vector<net::SharedChunk> chunks) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : chunks) queue_.push_back(std::move(c));
  }
  cv_.notify_one();
}

bool LayerSender::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  return ok_.load();
}

void LayerSender::Run() {
  for (;;) {
    net::SharedChunk chunk;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return closed_ || !queue_.empty(); });
      if (queue_.empty()) return;  // closed, and everything sent
      chunk = std::move(queue_.front());
      queue_.pop_front();
    }
    if (ok_.load() && !transfer_.SendChunk(std::move(chunk))) ok_.store(false);
  }
}

}  // namespace kvstream::edge
