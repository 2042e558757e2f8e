// UplinkFrame reads what protobuf reads: a chunk's payload held in the slices it came in,
// everything else parsed by protobuf, and any other message (or a chunk in an unusual
// encoding) left to protobuf whole. Checked against protobuf's own parse of the same
// bytes, cut into slices at random places, for valid, unusual and corrupted messages.
#include "common/net/uplink_frame.h"

#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace kvstream::net {
namespace {

using kvstream::v1::Uplink;

Uplink ChunkMessage(size_t payload_bytes, std::mt19937& rng) {
  Uplink up;
  kvstream::v1::KvChunk& c = *up.mutable_chunk();
  c.set_session_id("session-7");
  c.set_seq(12345678901ull);
  c.set_layer_begin(3);
  c.set_layer_end(9);
  c.set_num_tokens(170);
  c.set_positions(std::string("\x01\x02\x83\x04", 4));
  c.set_kv_heads(2);
  c.set_head_dim(64);
  c.mutable_k_spec()->set_bits(4);
  c.set_raw_bytes(payload_bytes);
  std::string payload(payload_bytes, '\0');
  for (char& b : payload) b = static_cast<char>(rng());
  c.set_payload(payload);
  c.set_crc32c(0xdeadbeef);
  return up;
}

std::vector<size_t> RandomCuts(size_t size, size_t max_part, std::mt19937& rng) {
  std::vector<size_t> cuts;
  for (size_t at = rng() % (max_part + 1); at < size; at += 1 + rng() % max_part) {
    cuts.push_back(at);
  }
  return cuts;
}

// Uplink field 2 (chunk) holding `chunk`, whatever its fields.
std::string ChunkField(const std::string& chunk) {
  std::string out = "\x12";
  for (uint64_t n = chunk.size();; n >>= 7) {
    out += static_cast<char>((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
    if (n < 0x80) break;
  }
  return out + chunk;
}

// `frame`'s message with its held payload put back, serialized: what protobuf's parse of
// the same bytes serializes to when the frame read them right.
std::string Rebuilt(const UplinkFrame& frame) {
  Uplink m = frame.message;
  if (frame.held()) m.mutable_chunk()->set_payload(frame.payload().Flatten());
  return m.SerializeAsString();
}

// Parses `bytes` both ways; true when both accepted them.
bool ExpectSameAsProtobuf(const std::string& bytes, const std::vector<size_t>& cuts) {
  Uplink want;
  const bool ok = want.ParseFromString(bytes);
  UplinkFrame frame;
  const grpc::Status st = frame.ParseSlices(bytes, cuts);
  EXPECT_EQ(st.ok(), ok) << st.error_message();
  if (!st.ok() || !ok) return false;
  EXPECT_EQ(Rebuilt(frame), want.SerializeAsString());
  EXPECT_EQ(frame.payload().Flatten(), want.chunk().payload());
  if (want.has_chunk() && bytes == want.SerializeAsString()) {  // else: the size as sent
    EXPECT_EQ(frame.chunk_bytes(), want.chunk().ByteSizeLong());
  }
  return true;
}

TEST(UplinkFrameTest, HoldsAChunksPayloadInTheSlicesItCameIn) {
  std::mt19937 rng(1);
  for (size_t payload : {0, 1, 100, 70000, 1 << 20}) {
    const Uplink up = ChunkMessage(payload, rng);
    const std::string bytes = up.SerializeAsString();
    for (size_t max_part : {1, 13, 8192, 65536, 1 << 21}) {
      SCOPED_TRACE(std::to_string(payload) + "-byte payload, slices of up to " +
                   std::to_string(max_part));
      const std::vector<size_t> cuts = RandomCuts(bytes.size(), max_part, rng);
      UplinkFrame frame;
      ASSERT_TRUE(frame.ParseSlices(bytes, cuts).ok());
      EXPECT_EQ(frame.held(), payload > 0);  // no payload field: protobuf parses it
      EXPECT_TRUE(frame.message.chunk().payload().empty());
      EXPECT_EQ(frame.payload().size(), payload);
      ExpectSameAsProtobuf(bytes, cuts);
    }
  }
  // Moved, the frame's payload still reads the same bytes.
  const Uplink up = ChunkMessage(5000, rng);
  UplinkFrame a;
  ASSERT_TRUE(a.ParseSlices(up.SerializeAsString(), {100, 2000, 2001}).ok());
  UplinkFrame b = std::move(a);
  EXPECT_EQ(b.payload().Flatten(), up.chunk().payload());
  EXPECT_FALSE(a.held());  // NOLINT(bugprone-use-after-move): moved from, left empty
  EXPECT_EQ(a.payload().size(), 0u);
  EXPECT_EQ(a.chunk_bytes(), 0u);
}

TEST(UplinkFrameTest, OtherMessagesAndUnusualEncodingsAreLeftToProtobuf) {
  std::mt19937 rng(2);
  Uplink open;
  open.mutable_open()->set_session_id("s");
  Uplink commit;
  commit.mutable_commit()->set_num_chunks(4);
  for (const Uplink& m : {open, commit}) {
    UplinkFrame frame;
    ASSERT_TRUE(frame.ParseSlices(m.SerializeAsString(), {1}).ok());
    EXPECT_FALSE(frame.held());
    EXPECT_EQ(frame.message.SerializeAsString(), m.SerializeAsString());
  }
  const Uplink a = ChunkMessage(300, rng), b = ChunkMessage(200, rng);
  kvstream::v1::KvChunk tail;  // a second payload (and seq) after the first: the last wins
  tail.set_payload("later");
  tail.set_seq(5);
  const std::string twice_payload =
      ChunkField(a.chunk().SerializeAsString() + tail.SerializeAsString());
  // Tags protobuf reads with a twist: a five-byte tag past 32 bits that protobuf cuts down
  // to the payload's tag (so a second payload, which protobuf keeps), and a six-byte one.
  kvstream::v1::KvChunk header = a.chunk();
  header.clear_payload();
  const std::string disguised =
      ChunkField(a.chunk().SerializeAsString() + std::string("\xFA\x80\x80\x80\x10\x03xyz", 9));
  const std::string too_long =
      ChunkField(header.SerializeAsString() + std::string("\xFA\x80\x80\x80\x80\x00\x03xyz", 10));
  const std::vector<std::string> cases = {
      twice_payload,
      disguised,
      too_long,
      a.SerializeAsString() + b.SerializeAsString(),     // the chunk field twice: merged
      a.SerializeAsString() + open.SerializeAsString(),  // a oneof: the last one set wins
  };
  for (const std::string& bytes : cases) {
    for (size_t max_part : {3, 1000}) {
      const bool parsed = ExpectSameAsProtobuf(bytes, RandomCuts(bytes.size(), max_part, rng));
      EXPECT_EQ(parsed, bytes != too_long);  // protobuf refuses a tag of six bytes
    }
  }
  UplinkFrame read;
  ASSERT_TRUE(read.ParseSlices(disguised, {7}).ok());
  EXPECT_FALSE(read.held());
  EXPECT_EQ(read.message.chunk().payload(), "xyz");  // as protobuf reads it
  UplinkFrame frame;
  ASSERT_TRUE(frame.ParseSlices(twice_payload, {}).ok());
  EXPECT_EQ(frame.message.chunk().payload(), "later");
  EXPECT_EQ(frame.message.chunk().seq(), 5u);
}

// With holding turned off (--zero_copy_uplink=false) every chunk's payload is in its
// message, as protobuf parses it.
TEST(UplinkFrameTest, WithHoldingOffPayloadsAreInTheMessage) {
  std::mt19937 rng(4);
  const Uplink up = ChunkMessage(70000, rng);
  UplinkFrame::SetHoldPayloads(false);
  UplinkFrame frame;
  const grpc::Status st = frame.ParseSlices(up.SerializeAsString(), {100, 9000});
  UplinkFrame::SetHoldPayloads(true);
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(frame.held());
  EXPECT_EQ(frame.message.chunk().payload(), up.chunk().payload());
  EXPECT_EQ(frame.payload().Flatten(), up.chunk().payload());
  UplinkFrame held;
  ASSERT_TRUE(held.ParseSlices(up.SerializeAsString(), {100, 9000}).ok());
  EXPECT_TRUE(held.held());
}

// Corrupted messages (bytes flipped, truncated, extended) are accepted or refused as
// protobuf accepts or refuses them, and read as protobuf reads them.
TEST(UplinkFrameTest, CorruptedMessagesReadAsProtobufReadsThem) {
  std::mt19937 rng(3);
  google::protobuf::LogSilencer quiet;  // protobuf logs each invalid UTF-8 string it refuses
  int accepted = 0, refused = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = ChunkMessage(rng() % 400, rng).SerializeAsString();
    switch (trial % 3) {
      case 0:  // flip a few bytes, mostly in the header
        for (int i = 0; i < 1 + static_cast<int>(rng() % 3); ++i) {
          bytes[rng() % std::min<size_t>(bytes.size(), 40)] ^= static_cast<char>(1 + rng() % 255);
        }
        break;
      case 1:
        bytes.resize(rng() % bytes.size());
        break;
      default:
        bytes.push_back(static_cast<char>(rng()));
        bytes.push_back(static_cast<char>(rng()));
    }
    if (ExpectSameAsProtobuf(bytes, RandomCuts(bytes.size(), 1 + rng() % 64, rng))) {
      ++accepted;
    } else {
      ++refused;
    }
    if (testing::Test::HasFailure()) FAIL() << "trial " << trial;
  }
  // Both outcomes were exercised.
  EXPECT_GT(accepted, 100) << accepted;
  EXPECT_GT(refused, 100) << refused;
}

}  // namespace
}  // namespace kvstream::net
