// One CloudService.Transfer stream as the edge drives it: the uplink (SessionOpen, chunks,
// Commit, each paced by gRPC flow control and the optional link emulation) on the
// caller's thread, and a reader thread that records chunk acks and hands answer tokens
// to a callback as they arrive (the edge relays them to its client). The reader is joined by
// Finish() or, on any other way out, by the destructor (which cancels the stream first), so an
// early return can never leave a joinable thread behind.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/net/shaper.h"
#include "common/net/uplink_send.h"
#include "kvstream/v1/service.grpc.pb.h"

namespace kvstream::edge {

class CloudTransfer {
 public:
  using Clock = std::chrono::steady_clock;

  struct Result {
    grpc::Status status;       // the stream's final status
    bool client_gone = false;  // the client stopped reading tokens
    bool have_done = false;    // the cloud sent Done
    kvstream::v1::CloudStats cloud;
    uint32_t tokens = 0;
    bool have_token = false;
    Clock::time_point start, first_token, last_ack, writes_done;
    uint64_t wire_bytes = 0;  // every serialized uplink message
    uint64_t chunks = 0;      // chunks sent on this stream
    uint64_t first_seq = 0;   // the seq of the first of them (a resumed session's next_seq)
    // Per chunk: bytes, when its send began and when its ack came (seconds since start;
    // -1: never acked), for the link estimator.
    std::vector<uint64_t> chunk_bytes;
    std::vector<double> sent, acked;
    // SessionOpen's send and the cloud's Opened (seconds since start; -1: none): a round
    // trip with no payload on it.
    double open_sent = -1, opened = -1;
    bool resumed = false;  // a resume: Opened waited on the cloud finding the session
  };

  // Returns false when the tokens' receiver is gone (the stream is then cancelled).
  using OnToken = std::function<bool(const kvstream::v1::Token&)>;

  // Opens the stream on `channel` under `context` (the edge's: made from its client's
  // Ask, so that call's cancellation and deadline propagate). `bearer`: the token the
  // cloud requires (empty: none). `zero_copy`: chunk payloads go to gRPC where they are
  // (false: copied into each message's buffer, as protobuf's serializer does).
  CloudTransfer(const std::shared_ptr<grpc::ChannelInterface>& channel,
                std::unique_ptr<grpc::ClientContext> context, OnToken on_token, net::Shaper* shaper,
                const std::string& bearer = "", bool zero_copy = true);
  ~CloudTransfer();
  CloudTransfer(const CloudTransfer&) = delete;
  CloudTransfer& operator=(const CloudTransfer&) = delete;

  // Each returns false once the stream is broken (the final status tells why).
  bool SendOpen(const kvstream::v1::Uplink& open);
  // Blocks until the cloud's Opened arrives and returns its next_seq, from which this
  // stream's chunks are numbered; nullopt when the stream ended first (Finish says why).
  std::optional<uint64_t> WaitOpened();
  // The payload is shared with the caller's copy (the edge keeps one for a retry).
  bool SendChunk(net::SharedChunk chunk);
  // Commit, with the projected answer check when there is one.
  bool SendCommit(const std::optional<kvstream::v1::AnswerCheck>& check = std::nullopt);
  // Cancels the stream (an error on the edge's side mid-transfer).
  void Cancel();
  // Throughput of this stream's acked chunks so far in bits/s, or `fallback` before any.
  double AckedBandwidth(double fallback);
  // Serialized bytes of the chunks sent and not yet acked.
  uint64_t UnackedBytes();
  // The cloud takes no more uplink messages: it sent Stop (a progressive session it
  // answers without Commit, or one that failed) or an answer token.
  bool stopped() const { return stopped_; }
  uint64_t next_seq() const { return result_.first_seq + result_.chunks; }
  Clock::time_point start() const { return result_.start; }

  // Half-closes the uplink, waits for the reader, and returns what the stream did.
  Result Finish();

 private:
  void Read();
  double Since(Clock::time_point t) const;

  std::shared_ptr<grpc::ChannelInterface> channel_;  // the stream's calls go through it
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<net::OutgoingUplink, kvstream::v1::Downlink>> stream_;
  bool zero_copy_;
  OnToken on_token_;
  net::Shaper* shaper_;
  std::mutex mu_;  // guards the chunk log and the Opened state (written by both threads)
  std::condition_variable opened_cv_;
  std::optional<uint64_t> opened_seq_;  // Opened.next_seq, once it came
  bool reader_done_ = false;
  Result result_;
  double uplink_start_ = 0;
  std::atomic<bool> client_gone_{false};
  std::atomic<bool> stopped_{false};
  bool finished_ = false;
  std::thread reader_;
};

}  // namespace kvstream::edge
