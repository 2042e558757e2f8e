// kvstream-transfer-bench: how fast a KV cache streams, against what gRPC itself does on
// the same machine. For every plan x chunk size it encodes one random cache of the
// model's shape (a prompt length drawn from --tokens per repetition) and sends the same
// chunks, with the edge's own CloudTransfer, twice in turn:
//   - to a sink (a child process answering Opened / one ack per chunk / Done and doing
//     nothing else): the baseline, what a gRPC stream of these messages costs (the sink
//     reads payloads where gRPC received them, as the cloud does, and the sink and the
//     sender keep freed memory for reuse, as the daemons do);
//   - to a real kvstream-cloud serving the model, which validates, decodes and writes
//     every chunk into a cache and then answers one token.
// The transfer stage is timed as the edge times it (stream start to the last chunk's
// ack), and so is "ready": that plus the time the cloud still spent writing chunks into
// its cache after Commit (CloudStats.rebuild_wait_seconds), i.e. when the cache is whole.
// Prints, per cell, the medians over repetitions: wire MB, encode seconds, the sink's
// transfer and GB/s, the cloud's transfer, GB/s, chunks/s, ready and rebuild seconds
// (CloudStats.rebuild_seconds: validating chunks and writing them into the cache); and
// the ratios of the cloud's goodput to the sink's (transfer and ready), each the median of
// one ratio per repetition (the sink and the cloud sent the same chunks back to back) with
// its interquartile range, so that a ratio's run-to-run spread is printed beside it; then
// each plan's transfer and ready times over the raw plan's, paired the same way (the raw
// plan's session of the same repetition, on the same cache). With --compare_cloud_args a
// second cloud, started with those flags too, gets the same chunks in every repetition
// (the three sessions' order cycling through all six), and its times are printed over
// the first's; --compare_zero_copy_send does the same with a third session to the first
// cloud from a sender that treats payloads the other way (copied into each message, or
// handed to gRPC where they are).

#include <grpcpp/support/method_handler.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/memory.h"
#include "common/base/quantile.h"
#include "common/base/status.h"
#include "common/codec/chunk.h"
#include "common/codec/positions.h"
#include "common/model/kv_chunks.h"
#include "common/model/model.h"
#include "common/net/grpc_util.h"
#include "common/net/process.h"
#include "common/net/uplink_frame.h"
#include "edge/transfer.h"

ABSL_FLAG(std::string, model, "",
          "Model directory (e.g. from kvstream make-model --preset=qwen2.5-0.5b): the cache "
          "shape, and what the cloud serves");
ABSL_FLAG(std::string, dtype, "bf16",
          "Model dtype on both sides (the raw plan sends it): bf16 "
          "or f32");
ABSL_FLAG(std::string, tokens, "1400-1700",
          "Cached prompt length: N, or a range A-B each repetition draws from");
ABSL_FLAG(std::string, chunk_kib, "256,1024,4096,8192", "Chunk sizes in KiB, comma separated");
ABSL_FLAG(std::string, plans, "raw;int8;int4;int4,zstd=3", "Plans, separated by ';'");
ABSL_FLAG(int, reps, 15, "Repetitions per cell (each with a new prompt length and cache)");
ABSL_FLAG(int, encode_threads, 2,
          "Also encode each cache on this many threads (the edge uses its model worker's "
          "--threads), beside one thread: the speedup is printed");
ABSL_FLAG(std::string, csv, "", "Also write the cells here as CSV");
ABSL_FLAG(std::vector<std::string>, cloud_args, {},
          "Extra kvstream-cloud flags, comma separated (e.g. --model_workers=1)");
ABSL_FLAG(std::vector<std::string>, compare_cloud_args, {},
          "Also run a second kvstream-cloud with these flags added (comma separated, e.g. "
          "--zero_copy_uplink=false), sent the same chunks in the same repetitions, and print "
          "its times against the first cloud's, paired by repetition");
ABSL_FLAG(bool, zero_copy_send, true,
          "The sender hands chunk payloads to gRPC where they are, as the edge does by default "
          "(false: copies each into its message's buffer, as --zero_copy_uplink=false does)");
ABSL_FLAG(bool, compare_zero_copy_send, false,
          "Also send the same chunks to the cloud with the other --zero_copy_send, in the same "
          "repetitions, and print its times against the first sender's, paired by repetition");
ABSL_FLAG(std::string, work_dir, "", "Port files and the cloud's log (default: a fresh /tmp dir)");
ABSL_FLAG(std::string, sink_port_file, "",
          "Internal: run as the baseline sink, writing its port here, until SIGTERM");

namespace kvstream {
namespace {

using Clock = std::chrono::steady_clock;
using kvstream::v1::Downlink;
using kvstream::v1::Uplink;

// The baseline: reads every message and answers as the cloud's protocol asks, no more.
// It reads them as the cloud does, payloads left in gRPC's buffers (uplink_frame.h), so
// that the baseline copies no byte the cloud does not.
class Sink final : public kvstream::v1::CloudService::Service {
 public:
  using Stream = grpc::ServerReaderWriter<Downlink, net::UplinkFrame>;
  Sink() {
    MarkMethodStreamed(
        net::TransferMethodIndex(),
        new grpc::internal::BidiStreamingHandler<Sink, net::UplinkFrame, Downlink>(
            [](Sink* sink, grpc::ServerContext*, Stream* stream) { return sink->Serve(stream); },
            this));
  }

 private:
  grpc::Status Serve(Stream* stream) {
    net::UplinkFrame frame;
    while (stream->Read(&frame)) {
      const Uplink& up = frame.message;
      Downlink d;
      if (up.has_open()) {
        d.mutable_opened()->set_next_seq(0);
      } else if (up.has_chunk()) {
        d.mutable_ack()->set_seq(up.chunk().seq());
        d.mutable_ack()->set_payload_bytes(frame.chunk_bytes());
      } else {
        d.mutable_done();
        stream->Write(d);
        break;
      }
      if (!stream->Write(d)) break;
    }
    return grpc::Status::OK;
  }
};

int RunSink(const std::string& port_file) {
  net::BlockShutdownSignals();
  Sink sink;
  grpc::ServerBuilder builder;
  net::ApplyServerLimits(builder);
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&sink);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) return 1;
  std::ofstream(port_file) << port << "\n";
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}

struct Session {
  double transfer = 0, rebuild = 0, wait = 0;
  uint64_t wire = 0, chunks = 0;
  bool ok = false;
  std::string error;
};

// One session of pre-encoded chunks, timed as the edge times its transfer stage; the
// chunks' payloads are shared with the stream as the edge shares its own.
Session Send(const std::shared_ptr<grpc::Channel>& channel, const Uplink& open,
             std::vector<net::SharedChunk> chunks, bool zero_copy) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  edge::CloudTransfer t(
      channel, std::move(context), [](const kvstream::v1::Token&) { return true; }, nullptr, "",
      zero_copy);
  bool ok = t.SendOpen(open);
  for (size_t i = 0; ok && i < chunks.size(); ++i) ok = t.SendChunk(std::move(chunks[i]));
  if (ok) t.SendCommit();
  const edge::CloudTransfer::Result r = t.Finish();
  Session s;
  s.ok = r.status.ok() && r.have_done;
  s.error = r.status.error_message();
  s.transfer = std::chrono::duration<double>(std::max(r.last_ack, r.start) - r.start).count();
  s.rebuild = r.cloud.rebuild_seconds();
  s.wait = r.cloud.rebuild_wait_seconds();
  s.wire = r.wire_bytes;
  s.chunks = r.chunks;
  return s;
}

struct Cell {
  std::string plan;
  int chunk_kib = 0;
  // One entry per repetition, in order: entry i of two cells is the same cache.
  std::vector<double> sink, wire, chunks, encode, encode_threaded;
  // A cloud's sessions: transfer, ready (transfer + rebuild wait) and rebuild seconds.
  struct Runs {
    std::vector<double> transfer, ready, rebuild;
  };
  Runs cloud, other;  // other: the cloud with --compare_cloud_args, or the other sender
};

using base::Median;
using base::Quantile;

// a[i] / b[i] for each repetition.
std::vector<double> Ratios(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) r.push_back(b[i] > 0 ? a[i] / b[i] : 0);
  return r;
}

// "0.93x [0.88-0.97]": the median of paired ratios and their interquartile range.
std::string RatioText(const std::vector<double>& r) {
  return absl::StrFormat("%.2fx [%.2f-%.2f]", Median(r), Quantile(r, 0.25), Quantile(r, 0.75));
}

absl::StatusOr<std::pair<int, int>> ParseRange(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, '-');
  int a = 0, b = 0;
  if (parts.size() > 2 || !absl::SimpleAtoi(parts[0], &a) || !absl::SimpleAtoi(parts.back(), &b) ||
      a < 1 || b < a) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tokens: expected N or A-B with 1 <= A <= B, found \"", text, "\""));
  }
  return std::make_pair(a, b);
}

// A cache of `n` slots with N(0, 1) keys and values.
std::unique_ptr<model::KvCache> RandomCache(const model::Model& m, int n, std::mt19937& rng) {
  const model::ModelConfig& c = m.config();
  std::vector<int32_t> positions(n);
  for (int i = 0; i < n; ++i) positions[i] = i;
  auto cache = m.NewCache(positions, n);
  std::normal_distribution<float> normal;
  std::vector<float> k(static_cast<size_t>(c.num_kv_heads) * n * c.head_dim), v(k.size());
  for (int l = 0; l < c.num_layers; ++l) {
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    (void)cache->WriteLayer(l, 0, n, k.data(), v.data());
  }
  return cache;
}

Uplink OpenFor(const model::Model& m, const model::KvCache& cache, const std::string& id) {
  Uplink up;
  kvstream::v1::SessionOpen& o = *up.mutable_open();
  const model::ModelConfig& c = m.config();
  o.set_session_id(id);
  o.set_mode(kvstream::v1::MODE_KV);
  o.set_max_tokens(1);
  o.set_model_fingerprint(m.fingerprint());
  o.mutable_dims()->set_num_layers(c.num_layers);
  o.mutable_dims()->set_num_kv_heads(c.num_kv_heads);
  o.mutable_dims()->set_head_dim(c.head_dim);
  o.mutable_dims()->set_vocab_size(c.vocab_size);
  o.mutable_dims()->set_max_position_embeddings(c.max_position_embeddings);
  o.set_last_token(0);
  o.set_num_slots(static_cast<uint32_t>(cache.size()));
  o.set_next_position(static_cast<uint32_t>(cache.size()));
  o.set_kept_positions(codec::EncodePositions(cache.positions()));
  return up;
}

struct Peers {
  net::ChildProcess sink, cloud, other;
  std::shared_ptr<grpc::Channel> sink_channel, cloud_channel;
  // The third session's: the other cloud's, or the cloud's for the other sender.
  std::shared_ptr<grpc::Channel> other_channel;
};

// Starts a kvstream-cloud serving --model with --cloud_args and `extra`; a channel to it.
absl::StatusOr<std::shared_ptr<grpc::Channel>> StartCloud(net::ChildProcess& cloud,
                                                          const std::string& dir,
                                                          const std::string& name,
                                                          const std::vector<std::string>& extra) {
  std::vector<std::string> args = {net::ExecutableDir() + "/kvstream-cloud",
                                   "--model=bench=" + absl::GetFlag(FLAGS_model),
                                   "--dtype=" + absl::GetFlag(FLAGS_dtype),
                                   "--listen=127.0.0.1:0",
                                   "--port_file=" + dir + "/" + name + ".port",
                                   "--metrics_address=",
                                   "--measure_rates=false",
                                   "--log_level=warning"};
  const std::vector<std::string> common = absl::GetFlag(FLAGS_cloud_args);
  args.insert(args.end(), common.begin(), common.end());
  args.insert(args.end(), extra.begin(), extra.end());
  RETURN_IF_ERROR(cloud.Start(args, dir + "/" + name + ".log"));
  ASSIGN_OR_RETURN(const int port, cloud.WaitForPortFile(dir + "/" + name + ".port", 300));
  return net::MakeChannel(absl::StrCat("127.0.0.1:", port));
}

absl::Status StartPeers(const std::string& dir, Peers& p) {
  RETURN_IF_ERROR(p.sink.Start(
      {net::ExecutableDir() + "/kvstream-transfer-bench", "--sink_port_file=" + dir + "/sink.port"},
      dir + "/sink.log"));
  ASSIGN_OR_RETURN(const int sink_port, p.sink.WaitForPortFile(dir + "/sink.port", 30));
  p.sink_channel = net::MakeChannel(absl::StrCat("127.0.0.1:", sink_port));
  ASSIGN_OR_RETURN(p.cloud_channel, StartCloud(p.cloud, dir, "cloud", {}));
  const std::vector<std::string> compare = absl::GetFlag(FLAGS_compare_cloud_args);
  if (!compare.empty()) {
    ASSIGN_OR_RETURN(p.other_channel, StartCloud(p.other, dir, "other", compare));
  } else if (absl::GetFlag(FLAGS_compare_zero_copy_send)) {
    p.other_channel = p.cloud_channel;
  }
  return absl::OkStatus();
}

// One repetition of one cell: encode, then the sink and the cloud (and the other cloud) in
// turn, in an order that changes every repetition, so none always runs on a warmer machine.
absl::Status RunRep(const model::Model& m, const model::KvCache& cache, const codec::Plan& plan,
                    Cell& cell, int rep, Peers& peers) {
  model::ChunkingOptions co;
  co.max_chunk_bytes = static_cast<uint64_t>(cell.chunk_kib) << 10;
  const std::string id = absl::StrCat("bench-", cell.plan, "-", cell.chunk_kib, "-", rep);
  auto t0 = Clock::now();
  ASSIGN_OR_RETURN(auto encoded, model::EncodeCache(cache, plan, id, co));
  cell.encode.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  co.threads = absl::GetFlag(FLAGS_encode_threads);
  t0 = Clock::now();
  ASSIGN_OR_RETURN(auto threaded, model::EncodeCache(cache, plan, id, co));
  cell.encode_threaded.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  if (threaded.size() != encoded.size() || encoded.empty()) {
    return absl::InternalError(absl::StrCat(encoded.size(), " chunks on one thread, ",
                                            threaded.size(), " on ", co.threads));
  }
  for (size_t i = 0; i < encoded.size(); ++i) {
    if (threaded[i].SerializeAsString() != encoded[i].SerializeAsString()) {
      return absl::InternalError(
          absl::StrCat("chunk ", i, " differs when encoded on ", co.threads, " threads"));
    }
  }
  const std::vector<net::SharedChunk> chunks = net::ShareAll(std::move(encoded));
  // Every order of the peers in turn, so that none goes first or before another more often.
  static constexpr int kTwo[2][2] = {{0, 1}, {1, 0}};
  static constexpr int kThree[6][3] = {{0, 1, 2}, {1, 2, 0}, {2, 0, 1},
                                       {0, 2, 1}, {2, 1, 0}, {1, 0, 2}};
  const int n = peers.other_channel != nullptr ? 3 : 2;
  const bool zero_copy = absl::GetFlag(FLAGS_zero_copy_send);
  const bool other_sender = absl::GetFlag(FLAGS_compare_zero_copy_send);
  for (int turn = 0; turn < n; ++turn) {
    // 0: the sink, 1: the cloud, 2: the other cloud or sender
    const int to = n == 2 ? kTwo[rep % 2][turn] : kThree[rep % 6][turn];
    const Session s =
        Send(to == 0   ? peers.sink_channel
             : to == 1 ? peers.cloud_channel
                       : peers.other_channel,
             OpenFor(m, cache, id), chunks, to == 2 && other_sender ? !zero_copy : zero_copy);
    if (!s.ok) {
      return absl::InternalError(absl::StrCat(
          std::array<const char*, 3>{"sink", "cloud", "third"}[to], " session failed: ", s.error));
    }
    if (to == 0) {
      cell.sink.push_back(s.transfer);
      continue;
    }
    Cell::Runs& runs = to == 1 ? cell.cloud : cell.other;
    runs.transfer.push_back(s.transfer);
    runs.ready.push_back(s.transfer + s.wait);
    runs.rebuild.push_back(s.rebuild);
    if (to == 1) {
      cell.wire.push_back(static_cast<double>(s.wire));
      cell.chunks.push_back(static_cast<double>(s.chunks));
    }
  }
  return absl::OkStatus();
}

// The second cloud (--compare_cloud_args) or sender (--compare_zero_copy_send) against
// the first, paired by repetition.
void PrintComparison(const std::vector<Cell>& cells) {
  if (cells.empty() || cells.front().other.transfer.empty()) return;
  if (absl::GetFlag(FLAGS_compare_cloud_args).empty()) {
    std::printf(
        "\nthe sender with --zero_copy_send=%s over the one with %s (paired by repetition): "
        "transfer, ready; rebuild seconds\n",
        absl::GetFlag(FLAGS_zero_copy_send) ? "false" : "true",
        absl::GetFlag(FLAGS_zero_copy_send) ? "true" : "false");
  } else {
    std::printf(
        "\nthe cloud with --compare_cloud_args=%s over the cloud without (paired by "
        "repetition): transfer, ready; rebuild seconds\n",
        absl::StrJoin(absl::GetFlag(FLAGS_compare_cloud_args), ",").c_str());
  }
  for (const Cell& c : cells) {
    std::printf("  %-12s %5d KiB: %s the transfer, %s ready; rebuild %.4f -> %.4f\n",
                c.plan.c_str(), c.chunk_kib,
                RatioText(Ratios(c.other.transfer, c.cloud.transfer)).c_str(),
                RatioText(Ratios(c.other.ready, c.cloud.ready)).c_str(), Median(c.cloud.rebuild),
                Median(c.other.rebuild));
  }
}

void Print(const std::vector<Cell>& cells, const std::string& model, const std::string& tokens,
           int reps) {
  std::printf("\nmodel %s (%s), random cache of %s tokens, %d repetitions per cell, loopback\n",
              model.c_str(), absl::GetFlag(FLAGS_dtype).c_str(), tokens.c_str(), reps);
  std::printf("sender: payloads %s; the sink reads them where gRPC received them\n",
              absl::GetFlag(FLAGS_zero_copy_send)
                  ? "handed to gRPC where they are (--zero_copy_send)"
                  : "copied into each message (--zero_copy_send=false)");
  std::printf(
      "ratio: the sink's transfer over the cloud's (ready: over the cloud's ready), the "
      "median of per-repetition ratios [interquartile range]\n");
  std::printf("%-12s %5s %7s %7s %7s %6s %7s %6s %7s %7s %7s  %-18s %-18s\n", "plan", "KiB",
              "wire MB", "encode", "sink s", "GB/s", "cloud s", "GB/s", "chunk/s", "ready s",
              "rebuild", "ratio", "ready");
  for (const Cell& c : cells) {
    const double wire = Median(c.wire), sink = Median(c.sink), cloud = Median(c.cloud.transfer);
    std::printf("%-12s %5d %7.2f %7.4f %7.4f %6.2f %7.4f %6.2f %7.0f %7.4f %7.4f  %-18s %-18s\n",
                c.plan.c_str(), c.chunk_kib, wire / 1e6, Median(c.encode), sink, wire / sink / 1e9,
                cloud, wire / cloud / 1e9, Median(c.chunks) / cloud, Median(c.cloud.ready),
                Median(c.cloud.rebuild), RatioText(Ratios(c.sink, c.cloud.transfer)).c_str(),
                RatioText(Ratios(c.sink, c.cloud.ready)).c_str());
  }
  std::printf("\nencode on %d threads against one (the same chunks)\n",
              absl::GetFlag(FLAGS_encode_threads));
  for (const Cell& c : cells) {
    std::printf("  %-12s %5d KiB: %.4f s -> %.4f s, %.2fx\n", c.plan.c_str(), c.chunk_kib,
                Median(c.encode), Median(c.encode_threaded),
                Median(c.encode) / Median(c.encode_threaded));
  }
  std::printf(
      "\nagainst the raw plan at the same chunk size (cloud, paired by repetition): "
      "transfer, ready, bytes\n");
  for (const Cell& c : cells) {
    for (const Cell& raw : cells) {
      if (raw.plan == "raw" && raw.chunk_kib == c.chunk_kib && c.plan != "raw") {
        std::printf("  %-12s %5d KiB: %s the transfer, %s ready, %.2fx the bytes\n", c.plan.c_str(),
                    c.chunk_kib, RatioText(Ratios(c.cloud.transfer, raw.cloud.transfer)).c_str(),
                    RatioText(Ratios(c.cloud.ready, raw.cloud.ready)).c_str(),
                    Median(c.wire) / Median(raw.wire));
      }
    }
  }
}

absl::Status WriteCsv(const std::string& path, const std::vector<Cell>& cells) {
  std::ofstream out(path);
  out << "plan,chunk_kib,wire_bytes,encode_s,sink_transfer_s,cloud_transfer_s,cloud_ready_s,"
         "cloud_rebuild_s,reps,encode_threaded_s,ratio,ratio_p25,ratio_p75,ready_ratio,"
         "compare_transfer_s,compare_ratio\n";
  for (const Cell& c : cells) {
    out << '"' << c.plan << '"' << ',' << c.chunk_kib << ',' << Median(c.wire) << ','
        << Median(c.encode) << ',' << Median(c.sink) << ',' << Median(c.cloud.transfer) << ','
        << Median(c.cloud.ready) << ',' << Median(c.cloud.rebuild) << ',' << c.cloud.transfer.size()
        << ',' << Median(c.encode_threaded);
    const std::vector<double> r = Ratios(c.sink, c.cloud.transfer);
    out << ',' << Median(r) << ',' << Quantile(r, 0.25) << ',' << Quantile(r, 0.75) << ','
        << Median(Ratios(c.sink, c.cloud.ready)) << ',';
    if (c.other.transfer.empty()) {
      out << ",\n";  // no second cloud: both columns empty
    } else {
      out << Median(c.other.transfer) << ',' << Median(Ratios(c.other.transfer, c.cloud.transfer))
          << '\n';
    }
  }
  return out ? absl::OkStatus() : absl::InternalError(absl::StrCat(path, ": write failed"));
}

absl::Status Run() {
  if (absl::GetFlag(FLAGS_model).empty()) {
    return absl::InvalidArgumentError("--model: a model directory is required");
  }
  ASSIGN_OR_RETURN(const auto range, ParseRange(absl::GetFlag(FLAGS_tokens)));
  if (!absl::GetFlag(FLAGS_compare_cloud_args).empty() &&
      absl::GetFlag(FLAGS_compare_zero_copy_send)) {
    return absl::InvalidArgumentError(
        "--compare_cloud_args and --compare_zero_copy_send: expected one of the two, found both");
  }
  if (absl::GetFlag(FLAGS_reps) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--reps: expected 1 or more, found ", absl::GetFlag(FLAGS_reps)));
  }
  std::vector<Cell> cells;
  std::vector<codec::Plan> plans;
  for (const absl::string_view p : absl::StrSplit(absl::GetFlag(FLAGS_plans), ';')) {
    ASSIGN_OR_RETURN(codec::Plan plan, codec::ParsePlan(p));
    for (const absl::string_view k : absl::StrSplit(absl::GetFlag(FLAGS_chunk_kib), ',')) {
      Cell c;
      c.plan = std::string(p);
      if (!absl::SimpleAtoi(k, &c.chunk_kib) || c.chunk_kib < 4 || c.chunk_kib > 8192) {
        return absl::InvalidArgumentError(
            absl::StrCat("--chunk_kib: expected sizes in 4..8192, found \"", k, "\""));
      }
      cells.push_back(c);
      plans.push_back(plan);
    }
  }
  ASSIGN_OR_RETURN(const std::string dir, net::WorkDir(absl::GetFlag(FLAGS_work_dir), "transfer"));
  model::SetComputeThreads(1);  // the sink and the cloud share the other core
  ASSIGN_OR_RETURN(
      auto m, model::Model::Load(absl::GetFlag(FLAGS_model), {"cpu", absl::GetFlag(FLAGS_dtype)}));
  Peers peers;
  RETURN_IF_ERROR(StartPeers(dir, peers));
  std::mt19937 rng(1);
  const int reps = absl::GetFlag(FLAGS_reps);
  for (int rep = 0; rep < reps; ++rep) {
    const int n = std::uniform_int_distribution<int>(range.first, range.second)(rng);
    const auto cache = RandomCache(*m, n, rng);
    for (size_t i = 0; i < cells.size(); ++i) {
      RETURN_IF_ERROR(RunRep(*m, *cache, plans[i], cells[i], rep, peers));
    }
    std::fprintf(stderr, "repetition %d/%d (%d tokens) done\n", rep + 1, reps, n);
  }
  Print(cells, absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_tokens), reps);
  PrintComparison(cells);
  (void)peers.sink.Stop(5);
  (void)peers.cloud.Stop(10);
  if (peers.other.running()) (void)peers.other.Stop(10);
  if (!absl::GetFlag(FLAGS_csv).empty()) return WriteCsv(absl::GetFlag(FLAGS_csv), cells);
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvstream

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "KV stream goodput against a plain gRPC stream of the same messages.\n"
      "  kvstream-transfer-bench --model=DIR [--tokens=1400-1700] [--plans='raw;int4']");
  absl::ParseCommandLine(argc, argv);
  // The sink and the sender keep freed memory as both daemons do: a baseline paying a
  // page fault for every fresh page would measure the allocator, not gRPC.
  (void)kvstream::base::KeepFreedMemoryForReuse();
  if (!absl::GetFlag(FLAGS_sink_port_file).empty()) {
    return kvstream::RunSink(absl::GetFlag(FLAGS_sink_port_file));
  }
  const absl::Status s = kvstream::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "kvstream-transfer-bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
