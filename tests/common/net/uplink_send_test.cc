// OutgoingUplink writes what protobuf writes, byte for byte, whether the payload is
// handed to gRPC where it is or copied into one buffer; the handed-over payload is the
// chunk's own memory, kept alive by gRPC's buffer after the chunk is gone, and the cloud's
// UplinkFrame reads the slices back into the same chunk.
#include "common/net/uplink_send.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/net/uplink_frame.h"

namespace kvstream::net {
namespace {

using kvstream::v1::KvChunk;
using kvstream::v1::Uplink;

// A chunk with random fields, each set or left at its default (so absent) at random.
KvChunk RandomChunk(size_t payload_bytes, std::mt19937& rng) {
  KvChunk c;
  auto maybe = [&rng] { return rng() % 3 != 0; };
  if (maybe()) c.set_session_id("session-" + std::to_string(rng() % 1000));
  if (maybe()) c.set_seq(rng() % 2 ? rng() : 12345678901ull);
  if (maybe()) c.set_layer_begin(rng() % 30);
  if (maybe()) c.set_layer_end(rng() % 30 + 1);
  if (maybe()) c.set_token_begin(rng() % 5000);
  if (maybe()) c.set_num_tokens(rng() % 5000);
  if (maybe()) c.set_positions(std::string(rng() % 300 + 1, static_cast<char>(rng())));
  if (maybe()) c.set_kv_heads(rng() % 8 + 1);
  if (maybe()) c.set_source_dtype(kvstream::v1::DTYPE_BF16);
  if (maybe()) c.set_head_dim(128);
  if (maybe()) c.mutable_k_spec()->set_bits(rng() % 8 + 1);
  if (maybe()) c.mutable_v_spec()->set_group_size(64);
  if (maybe()) c.set_zstd_level(3);
  if (maybe()) c.set_raw_bytes(payload_bytes * 2);
  std::string payload(payload_bytes, '\0');
  for (char& b : payload) b = static_cast<char>(rng());
  c.set_payload(payload);
  if (maybe()) c.set_crc32c(static_cast<uint32_t>(rng()));
  if (rng() % 4 == 0) {  // a field this version does not know (field 99, varint 5)
    const std::string unknown("\x98\x06\x05", 3);
    EXPECT_TRUE(c.MergeFromString(unknown));
    EXPECT_EQ(c.GetReflection()->GetUnknownFields(c).field_count(), 1);
  }
  return c;
}

std::string ProtobufBytes(const KvChunk& c) {
  Uplink up;
  *up.mutable_chunk() = c;
  return up.SerializeAsString();
}

TEST(OutgoingUplink, WritesWhatProtobufWrites) {
  std::mt19937 rng(5);
  for (int i = 0; i < 400; ++i) {
    // Payload lengths across the varint's one-, two- and three-byte sizes.
    const size_t n = std::vector<size_t>{1, 127, 128, 16383, 16384, 70000}[i % 6];
    const KvChunk chunk = RandomChunk(n, rng);
    const std::string want = ProtobufBytes(chunk);
    for (const bool zero_copy : {true, false}) {
      const OutgoingUplink up(SharedChunk::From(chunk), zero_copy);
      ASSERT_EQ(up.SerializeAsString(), want) << "chunk " << i << ", zero_copy " << zero_copy;
      EXPECT_EQ(up.ByteSize(), want.size());
    }
    EXPECT_EQ(SharedChunk::From(chunk).ByteSize(), chunk.ByteSizeLong());
    EXPECT_EQ(SharedChunk::From(chunk).Whole().SerializeAsString(), chunk.SerializeAsString());
  }
}

TEST(OutgoingUplink, OtherMessagesAndEmptyPayloadsAreProtobufs) {
  Uplink open;
  open.mutable_open()->set_session_id("s");
  open.mutable_open()->set_num_slots(300);
  EXPECT_EQ(OutgoingUplink(open).SerializeAsString(), open.SerializeAsString());
  EXPECT_EQ(OutgoingUplink(open).ByteSize(), open.ByteSizeLong());
  KvChunk empty;
  empty.set_seq(4);
  empty.set_crc32c(0);
  const OutgoingUplink up(SharedChunk::From(empty), true);
  EXPECT_EQ(up.SerializeAsString(), ProtobufBytes(empty));
  EXPECT_EQ(up.ByteSize(), ProtobufBytes(empty).size());
}

// The slices gRPC gets for `up`.
std::vector<grpc::Slice> Slices(const OutgoingUplink& up) {
  grpc::ByteBuffer buffer;
  EXPECT_TRUE(up.Serialize(&buffer).ok());
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  return slices;
}

TEST(OutgoingUplink, HandsOverThePayloadItselfAndKeepsItAlive) {
  std::mt19937 rng(6);
  KvChunk chunk = RandomChunk(1 << 20, rng);
  chunk.set_crc32c(77);  // a field after the payload: three slices
  const std::string want = ProtobufBytes(chunk);
  SharedChunk shared = SharedChunk::From(chunk);
  const char* payload = shared.payload->data();
  std::weak_ptr<const std::string> alive = shared.payload;
  grpc::ByteBuffer buffer;
  {
    const OutgoingUplink up(std::move(shared), /*zero_copy=*/true);
    ASSERT_TRUE(up.Serialize(&buffer).ok());
    const std::vector<grpc::Slice> slices = Slices(up);
    ASSERT_EQ(slices.size(), 3u);
    EXPECT_EQ(reinterpret_cast<const char*>(slices[1].begin()), payload);
    EXPECT_EQ(slices[1].size(), size_t{1} << 20);
  }
  shared = SharedChunk();
  EXPECT_FALSE(alive.expired());  // the buffer still refers to it
  std::vector<grpc::Slice> held;
  ASSERT_TRUE(buffer.Dump(&held).ok());
  std::string bytes;
  for (const grpc::Slice& s : held)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, want);
  held.clear();
  buffer.Clear();
  EXPECT_TRUE(alive.expired());  // and lets go with it
}

TEST(OutgoingUplink, CopyingWritesOneBufferOfItsOwn) {
  std::mt19937 rng(7);
  const SharedChunk shared = SharedChunk::From(RandomChunk(100000, rng));
  const std::vector<grpc::Slice> slices = Slices(OutgoingUplink(shared, /*zero_copy=*/false));
  ASSERT_EQ(slices.size(), 1u);
  const char* begin = reinterpret_cast<const char*>(slices[0].begin());
  EXPECT_FALSE(begin <= shared.payload->data() &&
               shared.payload->data() < begin + slices[0].size());
  EXPECT_EQ(shared.payload.use_count(), 1);
}

TEST(OutgoingUplink, TheCloudReadsTheSameChunkFromTheSlices) {
  std::mt19937 rng(8);
  for (int i = 0; i < 50; ++i) {
    const KvChunk chunk = RandomChunk(1 + rng() % 200000, rng);
    grpc::ByteBuffer buffer;
    ASSERT_TRUE(OutgoingUplink(SharedChunk::From(chunk), true).Serialize(&buffer).ok());
    UplinkFrame frame;
    ASSERT_TRUE(frame.Parse(&buffer).ok());
    ASSERT_TRUE(frame.held());
    EXPECT_EQ(frame.payload().Flatten(), chunk.payload());
    KvChunk header = chunk;
    header.clear_payload();
    EXPECT_EQ(frame.message.chunk().SerializeAsString(), header.SerializeAsString());
    EXPECT_EQ(frame.chunk_bytes(), chunk.ByteSizeLong());
  }
}

TEST(SharedChunk, CopiesShareOnePayload) {
  std::mt19937 rng(9);
  KvChunk chunk = RandomChunk(4096, rng);
  const std::string payload = chunk.payload();
  const SharedChunk a = SharedChunk::From(std::move(chunk));
  const SharedChunk b = a;
  EXPECT_EQ(a.payload.get(), b.payload.get());
  EXPECT_EQ(*b.payload, payload);
  EXPECT_TRUE(a.header.payload().empty());
  const std::vector<SharedChunk> all = ShareAll({RandomChunk(10, rng), RandomChunk(20, rng)});
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].payload->size(), 20u);
}

}  // namespace
}  // namespace kvstream::net
