// A Transfer stream's uplink read on a thread of its own, so that the session's thread can
// wait for the next message until a deadline: a progressive session (SessionOpen.tier_slots)
// with SessionOpen.answer_after_seconds answers from the tiers it holds when Commit is late,
// as it is when an outage holds back the rest of the uplink, Commit included. The reader
// keeps reading (and drops what comes) after the session stops asking, until the edge
// half-closes or the call ends; the destructor waits for that.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "kvstream/v1/service.grpc.pb.h"

namespace kvstream::cloud {

class UplinkReader {
 public:
  using Clock = std::chrono::steady_clock;
  using Stream = grpc::ServerReaderWriter<kvstream::v1::Downlink, kvstream::v1::Uplink>;

  explicit UplinkReader(Stream* stream);
  // Stops handing out messages and waits up to `grace` for the stream to end (the edge
  // half-closes once it has the answer); past that, cancels the call (`context`) and joins.
  void Close(grpc::ServerContext* context, std::chrono::milliseconds grace);
  ~UplinkReader();
  UplinkReader(const UplinkReader&) = delete;
  UplinkReader& operator=(const UplinkReader&) = delete;

  enum class Got { kMessage, kClosed, kTimedOut };
  // The next message; kClosed once the stream ended (Read returned false); kTimedOut at
  // `deadline` with none.
  Got Next(kvstream::v1::Uplink* out, Clock::time_point deadline);

 private:
  void Run();

  Stream* stream_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<kvstream::v1::Uplink> queue_;
  bool ended_ = false;    // Read returned false
  bool closing_ = false;  // Close: drop what comes
  std::thread thread_;
};

}  // namespace kvstream::cloud
