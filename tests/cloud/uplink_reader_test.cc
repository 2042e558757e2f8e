// The cloud's uplink reader over a scripted stream: messages in order, a deadline that
// passes with none, the byte cap that stops reading (so flow control holds the sender
// back), Discard, and Close cancelling a stream that does not end.
#include "cloud/uplink_reader.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace kvstream::cloud {
namespace {

using kvstream::v1::Downlink;
using kvstream::v1::Uplink;
using Clock = std::chrono::steady_clock;

// Read hands out pushed messages, blocks while there are none, and returns false once
// ended (by End, or by Cancel as a cancelled call's Read does).
class ScriptedStream : public grpc::ServerReaderWriterInterface<Downlink, UplinkFrame> {
 public:
  void Push(int seq, size_t payload_bytes) {
    Uplink up;
    up.mutable_chunk()->set_seq(seq);
    up.mutable_chunk()->set_payload(std::string(payload_bytes, 'x'));
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(up);
    cv_.notify_all();
  }
  void End() {
    std::lock_guard<std::mutex> lock(mu_);
    ended_ = true;
    cv_.notify_all();
  }
  int reads() const { return reads_; }

  // Parsed as the cloud parses what gRPC hands it, in slices.
  bool Read(UplinkFrame* msg) override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !pending_.empty() || ended_; });
    if (pending_.empty()) return false;
    const std::string bytes = pending_.front().SerializeAsString();
    if (!msg->ParseSlices(bytes, {bytes.size() / 2}).ok()) return false;
    pending_.pop_front();
    ++reads_;
    return true;
  }
  bool NextMessageSize(uint32_t* sz) override {
    *sz = 1 << 20;
    return true;
  }
  void SendInitialMetadata() override {}
  bool Write(const Downlink&, grpc::WriteOptions) override { return true; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Uplink> pending_;
  bool ended_ = false;
  std::atomic<int> reads_{0};
};

Clock::time_point In(int ms) { return Clock::now() + std::chrono::milliseconds(ms); }

// Waits (up to 10 s) for the reader to have read `n` messages, then a little longer, so
// that a reader that would read past `n` has had the time to.
int ReadsSettleAt(const ScriptedStream& stream, int n) {
  for (auto until = In(10000); stream.reads() < n && Clock::now() < until;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return stream.reads();
}

TEST(UplinkReaderTest, HandsOutMessagesInOrderAndTimesOutWithoutOne) {
  ScriptedStream stream;
  UplinkReader reader(&stream, 1 << 20);
  stream.Push(0, 10);
  stream.Push(1, 10);
  UplinkFrame up;
  ASSERT_EQ(reader.Next(&up, In(2000)), UplinkReader::Got::kMessage);
  EXPECT_EQ(up.message.chunk().seq(), 0u);
  ASSERT_EQ(reader.Next(&up, In(2000)), UplinkReader::Got::kMessage);
  EXPECT_EQ(up.message.chunk().seq(), 1u);
  const auto t0 = Clock::now();
  EXPECT_EQ(reader.Next(&up, In(100)), UplinkReader::Got::kTimedOut);
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(100));
  stream.End();
  EXPECT_EQ(reader.Next(&up, In(2000)), UplinkReader::Got::kClosed);
  reader.Close([] { FAIL() << "an ended stream needs no cancel"; }, std::chrono::seconds(1));
}

TEST(UplinkReaderTest, StopsReadingAtTheByteCapUntilMessagesAreTaken) {
  ScriptedStream stream;
  UplinkReader reader(&stream, 3000);  // two 1,000-byte messages fit, the third fills it
  for (int i = 0; i < 6; ++i) stream.Push(i, 1000);
  EXPECT_EQ(ReadsSettleAt(stream, 3), 3) << "read past the cap";
  UplinkFrame up;
  ASSERT_EQ(reader.Next(&up, In(2000)), UplinkReader::Got::kMessage);
  EXPECT_EQ(ReadsSettleAt(stream, 4), 4);
  // Discarded: what is queued and what comes is dropped, and reading goes on to the end.
  reader.Discard();
  EXPECT_EQ(ReadsSettleAt(stream, 6), 6);
  stream.End();
  EXPECT_EQ(reader.Next(&up, In(2000)), UplinkReader::Got::kClosed);
  reader.Close([] { FAIL() << "an ended stream needs no cancel"; }, std::chrono::seconds(1));
}

TEST(UplinkReaderTest, CloseCancelsAStreamThatDoesNotEndWithinTheGrace) {
  ScriptedStream stream;
  UplinkReader reader(&stream, 1 << 20);
  stream.Push(0, 10);
  bool cancelled = false;
  const auto t0 = Clock::now();
  reader.Close(
      [&] {
        cancelled = true;
        stream.End();  // as TryCancel makes a blocked Read return false
      },
      std::chrono::milliseconds(150));
  EXPECT_TRUE(cancelled);
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(150));
}

}  // namespace
}  // namespace kvstream::cloud
