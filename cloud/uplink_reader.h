// A Transfer stream's uplink read on a thread of its own, so that the session's thread can
// wait for the next message until a deadline: a progressive session (SessionOpen.tier_slots)
// with SessionOpen.answer_after_seconds answers from the tiers it holds when Commit is late,
// as it is when an outage holds back the rest of the uplink, Commit included. The reader
// holds at most `max_queued_bytes` of messages (then stops reading, so gRPC's flow control
// holds the sender back); once the session stops taking messages (Discard, Close) it drops
// what comes until the edge half-closes or the call ends.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "common/net/uplink_frame.h"
#include "kvstream/v1/service.grpc.pb.h"

namespace kvstream::cloud {

using UplinkFrame = net::UplinkFrame;

class UplinkReader {
 public:
  using Clock = std::chrono::steady_clock;
  using Stream = grpc::ServerReaderWriterInterface<kvstream::v1::Downlink, UplinkFrame>;

  UplinkReader(Stream* stream, uint64_t max_queued_bytes);
  // Joins the reader, which must have ended: call Close first.
  ~UplinkReader();
  UplinkReader(const UplinkReader&) = delete;
  UplinkReader& operator=(const UplinkReader&) = delete;

  enum class Got { kMessage, kClosed, kTimedOut };
  // The next message; kClosed once the stream ended (Read returned false) and nothing is
  // queued; kTimedOut at `deadline` with none.
  Got Next(UplinkFrame* out, Clock::time_point deadline);
  // Drops what is queued and what comes from now on.
  void Discard();
  // Discards, waits up to `grace` for the stream to end (the edge half-closes once told to
  // stop), past that calls `cancel` (which must end the stream: the call's TryCancel),
  // and joins the reader.
  void Close(const std::function<void()>& cancel, std::chrono::milliseconds grace);

 private:
  void Run();

  Stream* stream_;
  const uint64_t max_queued_bytes_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<UplinkFrame> queue_;
  uint64_t queued_bytes_ = 0;
  bool ended_ = false;       // Read returned false
  bool discarding_ = false;  // Discard or Close: drop what comes
  std::thread thread_;
};

}  // namespace kvstream::cloud
