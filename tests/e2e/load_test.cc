// Reliability under load: real kvstream-cloud and kvstream-edge processes with their
// default admission flags (model workers, torch threads, queue bound), driven by bursts
// of concurrent clients, and a cancelled long prefill.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/eval/tasks.h"
#include "common/model/tokenizer.h"
#include "common/net/ask_client.h"
#include "common/net/grpc_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kvstream/v1/service.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/http_get.h"
#include "tests/support/tcp_proxy.h"

namespace kvstream {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kScout[] = "testdata/models-2k/scout";
constexpr char kLarge[] = "testdata/models-2k/large";

// A field of /proc/<pid>/status ("Threads", "VmRSS"), as its first number.
long ProcStatus(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

net::AskCall Timeout(double seconds) {
  net::AskCall call;
  call.timeout_seconds = seconds;
  return call;
}

// A two-record text question that any daemon pair answers in milliseconds.
kvstream::v1::AskRequest SmallQuestion() {
  kvstream::v1::AskRequest req;
  req.set_context("The code of saddle is shoos. The code of hood is organic.");
  req.set_question("What is the code of saddle?");
  req.mutable_policy()->set_max_tokens(2);
  return req;
}

// A question over 40 records (~430 prompt tokens): its f16 cache takes seconds on a
// shaped uplink of 1-2 Mbit/s, long enough to break the transfer halfway.
kvstream::v1::AskRequest FortyItemQuestion() {
  kvstream::v1::AskRequest req;
  std::string context;
  for (int i = 0; i < 40; ++i)
    absl::StrAppend(&context, "The code of item", i, " is w", 7 * i, ". ");
  req.set_context(context);
  req.set_question("What is the code of item17?");
  req.mutable_policy()->set_max_tokens(4);
  return req;
}

class LoadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new std::string(net::WorkDir("", "kvstream-load").value_or("/tmp"));
    cloud_ = new testing::Daemon;
    edge_ = new testing::Daemon;
    // Default admission flags on both: only what the deployment must name is given.
    absl::Status st = testing::StartDaemon(
        *cloud_, KVSTREAM_BIN_DIR, *work_, "cloud", "kvstream-cloud",
        {absl::StrCat("--model=scout=", kScout), absl::StrCat("--model=large=", kLarge)});
    if (st.ok()) {
      st = testing::StartDaemon(
          *edge_, KVSTREAM_BIN_DIR, *work_, "edge", "kvstream-edge",
          {absl::StrCat("--scout=", kScout), absl::StrCat("--cloud=127.0.0.1:", cloud_->port),
           "--cloud_model=large"});
    }
    start_status_ = new absl::Status(st);
    tokenizer_ = model::Tokenizer::Load(absl::StrCat(kScout, "/tokenizer.json")).value().release();
  }

  static void TearDownTestSuite() {
    testing::StopDaemons({edge_, cloud_});
    delete tokenizer_;
    delete start_status_;
    delete work_;
  }

  void SetUp() override {
    ASSERT_TRUE(start_status_->ok())
        << "daemons did not start: " << *start_status_ << " (logs in " << *work_ << ")";
    edge_stub_ = kvstream::v1::EdgeService::NewStub(
        net::MakeChannel(absl::StrCat("127.0.0.1:", edge_->port)));
  }

  // A needle question padded to about `tokens` prompt tokens.
  static kvstream::v1::AskRequest Needle(int tokens, int seed) {
    auto words = eval::LoadWords();
    const model::Tokenizer* t = tokenizer_;
    eval::TaskGenerator gen(*words, [t](const std::string& s) {
      return static_cast<int>(t->Encode(s, false)->size());
    });
    eval::TaskOptions o;
    o.kind = "needle";
    o.target_tokens = tokens;
    o.num_examples = 1;
    o.seed = seed;
    const eval::Example ex = gen.Generate(o).at(0);
    kvstream::v1::AskRequest r;
    r.set_context(ex.context);
    r.set_question(ex.question);
    r.mutable_policy()->set_mode(kvstream::v1::MODE_KV);
    r.mutable_policy()->set_selector("q2c");
    r.mutable_policy()->set_retention(0.5);
    r.mutable_policy()->set_spec("int4");
    r.mutable_policy()->set_max_tokens(4);
    return r;
  }

  static std::string* work_;
  static testing::Daemon* cloud_;
  static testing::Daemon* edge_;
  static absl::Status* start_status_;
  static model::Tokenizer* tokenizer_;
  std::unique_ptr<kvstream::v1::EdgeService::Stub> edge_stub_;
};

std::string* LoadTest::work_ = nullptr;
testing::Daemon* LoadTest::cloud_ = nullptr;
testing::Daemon* LoadTest::edge_ = nullptr;
absl::Status* LoadTest::start_status_ = nullptr;
model::Tokenizer* LoadTest::tokenizer_ = nullptr;

// Health checks every 100 ms while it lives; counts the ones not SERVING within 2 s.
class HealthProbe {
 public:
  explicit HealthProbe(int port) {
    auto stub =
        grpc::health::v1::Health::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", port)));
    thread_ = std::thread([this, stub = std::move(stub)] {
      while (!stop_) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
        grpc::health::v1::HealthCheckResponse resp;
        const grpc::Status st = stub->Check(&ctx, {}, &resp);
        ++checks_;
        if (!st.ok() || resp.status() != grpc::health::v1::HealthCheckResponse::SERVING)
          ++failures_;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  ~HealthProbe() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int checks() const { return checks_; }
  int failures() const { return failures_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> checks_{0}, failures_{0};
  std::thread thread_;
};

// 64 concurrent requests, three rounds: each answers or is refused with
// RESOURCE_EXHAUSTED within its deadline, health answers throughout, and threads,
// sessions and memory come back after each round.
TEST_F(LoadTest, BurstsAnswerOrAreRefusedWithinTheirDeadline) {
  constexpr int kClients = 64;
  constexpr double kDeadline = 60;
  const kvstream::v1::AskRequest request = Needle(512, 11);
  ASSERT_TRUE(net::Ask(*edge_stub_, request, Timeout(30)).ok());  // warm
  const long threads_before = ProcStatus(edge_->process.pid(), "Threads");
  std::vector<long> rss;
  for (int round = 0; round < 3; ++round) {
    HealthProbe health(edge_->port);
    std::mutex mu;
    std::map<std::string, int> codes;
    double slowest = 0;
    std::vector<std::thread> clients;
    for (int i = 0; i < kClients; ++i) {
      clients.emplace_back([&] {
        const auto t0 = Clock::now();
        auto r = net::Ask(*edge_stub_, request, Timeout(kDeadline));
        const double took = std::chrono::duration<double>(Clock::now() - t0).count();
        std::lock_guard<std::mutex> lock(mu);
        codes[r.ok() ? "OK" : absl::StatusCodeToString(r.status().code())]++;
        if (r.ok()) {
          EXPECT_FALSE(r->token_ids.empty());
        }
        slowest = std::max(slowest, took);
      });
    }
    for (auto& c : clients) c.join();
    health.Stop();
    std::string summary;
    for (const auto& [code, n] : codes) absl::StrAppend(&summary, code, "=", n, " ");
    std::printf("round %d: %s slowest %.2f s, health %d/%d failed\n", round, summary.c_str(),
                slowest, health.failures(), health.checks());
    EXPECT_GE(codes["OK"], 1) << summary;
    EXPECT_EQ(codes["OK"] + codes["RESOURCE_EXHAUSTED"], kClients) << summary;
    EXPECT_LT(slowest, kDeadline + 1);
    EXPECT_EQ(health.failures(), 0) << "of " << health.checks();
    // Back to idle: nothing queued or running, no session held, threads reclaimed.
    EXPECT_EQ(testing::MetricValue(edge_->metrics_port, "kvstream_edge_model_workers_busy"), 0);
    EXPECT_EQ(testing::MetricValue(edge_->metrics_port, "kvstream_edge_queued_requests"), 0);
    EXPECT_EQ(testing::MetricValue(cloud_->metrics_port, "kvstream_cloud_active_sessions"), 0);
    long threads = 0;
    for (int i = 0; i < 100; ++i) {
      threads = ProcStatus(edge_->process.pid(), "Threads");
      if (threads <= threads_before + 4) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_LE(threads, threads_before + 4) << "edge threads before the bursts: " << threads_before;
    rss.push_back(ProcStatus(edge_->process.pid(), "VmRSS"));
  }
  std::printf("edge RSS after rounds: %ld, %ld, %ld kB\n", rss[0], rss[1], rss[2]);
  EXPECT_LE(rss[2], rss[0] * 115 / 100);
}

// The cloud serves Transfer with gRPC's synchronous API: a stream holds one handler
// thread from its first message to its end, and model work is bounded by the admission
// gate, not by threads. 64 streams held open at once (the per-peer limit) must all get a
// handler (none waits behind another), GetInfo must keep answering, and every thread must
// come back once the streams end. The figures printed are docs/daemons.md's case for
// the synchronous API.
TEST_F(LoadTest, CloudHoldsSixtyFourStreamsAndGivesTheirThreadsBack) {
  constexpr int kStreams = 64;
  const pid_t cloud = cloud_->process.pid();
  auto stub = kvstream::v1::CloudService::NewStub(
      net::MakeChannel(absl::StrCat("127.0.0.1:", cloud_->port)));
  auto get_info = [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    kvstream::v1::GetInfoResponse info;
    return stub->GetInfo(&ctx, {}, &info).ok();
  };
  ASSERT_TRUE(get_info());
  const long threads_idle = ProcStatus(cloud, "Threads"), rss_idle = ProcStatus(cloud, "VmRSS");
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<
      std::unique_ptr<grpc::ClientReaderWriter<kvstream::v1::Uplink, kvstream::v1::Downlink>>>
      streams;
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub->Transfer(contexts.back().get()));
  }
  // Every stream reaches a handler: the threads grow by about one per stream.
  long threads_open = 0;
  for (int i = 0; i < 100 && threads_open < threads_idle + kStreams - 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    threads_open = ProcStatus(cloud, "Threads");
  }
  const long rss_open = ProcStatus(cloud, "VmRSS");
  const bool info_while_open = get_info();
  for (auto& c : contexts) c->TryCancel();
  for (auto& st : streams) st->Finish();
  long threads_after = 0;
  for (int i = 0; i < 100; ++i) {
    threads_after = ProcStatus(cloud, "Threads");
    if (threads_after <= threads_idle + 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::printf(
      "cloud with %d open Transfer streams: threads %ld idle, %ld open (%.2f per stream), %ld "
      "after; RSS %ld kB idle, %ld kB open (%.0f kB per stream)\n",
      kStreams, threads_idle, threads_open,
      static_cast<double>(threads_open - threads_idle) / kStreams, threads_after, rss_idle,
      rss_open, static_cast<double>(rss_open - rss_idle) / kStreams);
  // Up to two of the server's idle polling threads (gRPC's MAX_POLLERS default) take a
  // stream without a new thread; every other stream needs its own.
  EXPECT_GE(threads_open, threads_idle + kStreams - 2) << "a stream waited for a handler thread";
  EXPECT_TRUE(info_while_open);
  EXPECT_LE(threads_after, threads_idle + 4);
  EXPECT_TRUE(get_info());
}

// A request cancelled in the middle of a long prefill gives its model worker back within
// about one layer's time, not after the whole prefill.
TEST_F(LoadTest, CancelledPrefillFreesItsWorker) {
  const kvstream::v1::AskRequest request = Needle(4000, 12);
  auto whole = net::Ask(*edge_stub_, request, Timeout(60));
  ASSERT_TRUE(whole.ok()) << whole.status();
  const double prefill = whole->stats.stages().prefill();
  const int layers = 4;  // the scout's
  std::printf("uncancelled prefill of %lu context tokens: %.3f s\n",
              static_cast<unsigned long>(whole->stats.context_tokens()), prefill);

  std::atomic<grpc::ClientContext*> call{nullptr};
  std::thread client([&] {
    net::AskCall ask = Timeout(60);
    ask.on_start = [&](grpc::ClientContext* c) { call = c; };
    auto r = net::Ask(*edge_stub_, request, ask);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  });
  // Cancel once the request holds a worker and has had a quarter of a prefill's time.
  bool busy = false;
  for (int i = 0; i < 2000 && !busy; ++i) {
    busy = call.load() != nullptr &&
           testing::MetricValue(edge_->metrics_port, "kvstream_edge_model_workers_busy") == 1;
    if (!busy) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(busy);
  std::this_thread::sleep_for(std::chrono::duration<double>(prefill / 4));
  const auto cancelled_at = Clock::now();
  call.load()->TryCancel();
  double freed_after = -1;
  for (int i = 0; i < 5000; ++i) {
    if (testing::MetricValue(edge_->metrics_port, "kvstream_edge_model_workers_busy") == 0) {
      freed_after = std::chrono::duration<double>(Clock::now() - cancelled_at).count();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  client.join();
  std::printf("worker freed %.3f s after the cancel (one layer: %.3f s)\n", freed_after,
              prefill / layers);
  ASSERT_GE(freed_after, 0);
  EXPECT_LT(freed_after, 1.5 * prefill / layers + 0.02);
}

// The edge reaches a cloud that comes back after a 20 s outage within its bounded
// reconnect backoff: a request 2 s after the restarted cloud serves succeeds. (With
// gRPC's default backoff, by then growing past 10 s, it failed.)
TEST(RecoveryTest, CloudBackAfterAnOutageIsUsedWithinSeconds) {
  const std::string work = net::WorkDir("", "kvstream-recovery").value_or("/tmp");
  const int port = testing::FreePort();
  ASSERT_GT(port, 0);
  const std::vector<std::string> cloud_args = {absl::StrCat("--model=large=", kLarge),
                                               absl::StrCat("--listen=127.0.0.1:", port),
                                               "--measure_rates=false"};
  auto* cloud = new testing::Daemon;
  auto* edge = new testing::Daemon;
  ASSERT_TRUE(
      testing::StartDaemon(*cloud, KVSTREAM_BIN_DIR, work, "cloud", "kvstream-cloud", cloud_args)
          .ok());
  ASSERT_TRUE(testing::StartDaemon(
                  *edge, KVSTREAM_BIN_DIR, work, "edge", "kvstream-edge",
                  {absl::StrCat("--scout=", kScout), absl::StrCat("--cloud=127.0.0.1:", port),
                   "--cloud_model=large", "--mode=text"})
                  .ok());
  auto stub =
      kvstream::v1::EdgeService::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", edge->port)));
  const kvstream::v1::AskRequest req = SmallQuestion();
  ASSERT_TRUE(net::Ask(*stub, req, Timeout(10)).ok());

  ASSERT_TRUE(cloud->process.Stop(20).ok());
  int failed = 0, refused_up_front = 0;
  for (const auto until = Clock::now() + std::chrono::seconds(20); Clock::now() < until;) {
    const absl::Status st = net::Ask(*stub, req, Timeout(2)).status();
    failed += st.code() == absl::StatusCode::kUnavailable;
    refused_up_front += absl::StrContains(st.message(), "the request was not started");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_GT(failed, 10) << "requests during the outage fail fast with UNAVAILABLE";
  EXPECT_GT(refused_up_front, 5) << "the edge sees the cloud is down before starting work";
  delete cloud;
  cloud = new testing::Daemon;
  ASSERT_TRUE(
      testing::StartDaemon(*cloud, KVSTREAM_BIN_DIR, work, "cloud2", "kvstream-cloud", cloud_args)
          .ok());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto r = net::Ask(*stub, req, Timeout(5));
  EXPECT_TRUE(r.ok()) << r.status();
  testing::StopDaemons({edge, cloud});
}

// A cloud that hangs (SIGSTOP: its connections stay open, nothing answers) fails the
// edge's requests within the keepalive time instead of holding them to their deadline,
// and is used again once it resumes.
TEST(RecoveryTest, HungCloudFailsRequestsWithinTheKeepalive) {
  const std::string work = net::WorkDir("", "kvstream-hung").value_or("/tmp");
  auto* cloud = new testing::Daemon;
  auto* edge = new testing::Daemon;
  ASSERT_TRUE(
      testing::StartDaemon(*cloud, KVSTREAM_BIN_DIR, work, "cloud", "kvstream-cloud",
                           {absl::StrCat("--model=large=", kLarge), "--measure_rates=false"})
          .ok());
  ASSERT_TRUE(testing::StartDaemon(*edge, KVSTREAM_BIN_DIR, work, "edge", "kvstream-edge",
                                   {absl::StrCat("--scout=", kScout),
                                    absl::StrCat("--cloud=127.0.0.1:", cloud->port),
                                    "--cloud_model=large", "--mode=text", "--keepalive_seconds=1"})
                  .ok());
  auto stub =
      kvstream::v1::EdgeService::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", edge->port)));
  const kvstream::v1::AskRequest req = SmallQuestion();
  ASSERT_TRUE(net::Ask(*stub, req, Timeout(10)).ok());

  ASSERT_EQ(::kill(cloud->process.pid(), SIGSTOP), 0);
  const auto t0 = Clock::now();
  auto hung = net::Ask(*stub, req, Timeout(30));
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(hung.status().code(), absl::StatusCode::kUnavailable) << hung.status();
  EXPECT_LT(took, 8.0) << "keepalive 1 s: an unanswered ping drops the connection";
  std::printf("hung cloud: the request failed after %.2f s\n", took);
  ASSERT_EQ(::kill(cloud->process.pid(), SIGCONT), 0);
  absl::Status after = absl::UnknownError("not tried");
  for (int i = 0; i < 10 && !after.ok(); ++i) {
    after = net::Ask(*stub, req, Timeout(5)).status();
    if (!after.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_TRUE(after.ok()) << after;
  testing::StopDaemons({edge, cloud});
}

// The cloud is killed while a kv request's chunks are on a slow uplink, and restarted on
// the same port. With --on_transfer_failure=retry the edge sends the payload again and
// the answer equals the uninterrupted one; with =text it sends the prompt as text and
// the answer equals a text-mode answer. The stats say what happened.
TEST(RecoveryTest, KilledCloudMidTransferIsRetriedOrAnsweredAsText) {
  const std::string work = net::WorkDir("", "kvstream-retry").value_or("/tmp");
  const int port = testing::FreePort();
  ASSERT_GT(port, 0);
  const std::vector<std::string> cloud_args = {
      absl::StrCat("--model=scout=", kScout), absl::StrCat("--model=large=", kLarge),
      absl::StrCat("--listen=127.0.0.1:", port), "--measure_rates=false"};
  auto* cloud = new testing::Daemon;
  ASSERT_TRUE(
      testing::StartDaemon(*cloud, KVSTREAM_BIN_DIR, work, "cloud", "kvstream-cloud", cloud_args)
          .ok());
  std::map<std::string, testing::Daemon*> edges;
  for (const char* policy : {"retry", "text"}) {
    edges[policy] = new testing::Daemon;
    // 1 Mbit/s: the f16 cache of this prompt takes seconds to send.
    ASSERT_TRUE(testing::StartDaemon(
                    *edges[policy], KVSTREAM_BIN_DIR, work, absl::StrCat("edge-", policy),
                    "kvstream-edge",
                    {absl::StrCat("--scout=", kScout), absl::StrCat("--cloud=127.0.0.1:", port),
                     "--cloud_model=large", "--mode=kv", "--spec=f16", "--uplink_mbps=1",
                     absl::StrCat("--on_transfer_failure=", policy), "--transfer_retries=8"})
                    .ok());
  }
  const kvstream::v1::AskRequest req = FortyItemQuestion();
  auto stub_of = [&](const char* policy) {
    return kvstream::v1::EdgeService::NewStub(
        net::MakeChannel(absl::StrCat("127.0.0.1:", edges[policy]->port)));
  };
  // The uninterrupted answers: kv (as the retry must give) and text (the fallback's).
  auto kv = net::Ask(*stub_of("retry"), req, Timeout(60));
  ASSERT_TRUE(kv.ok()) << kv.status();
  ASSERT_GT(kv->stats.stages().transfer(), 1.0) << "the kill must land mid-transfer";
  EXPECT_EQ(kv->stats.transfer_attempts(), 1u);
  EXPECT_EQ(kv->stats.recovery(), "");
  kvstream::v1::AskRequest text_req = req;
  text_req.mutable_policy()->set_mode(kvstream::v1::MODE_TEXT);
  auto text = net::Ask(*stub_of("text"), text_req, Timeout(60));
  ASSERT_TRUE(text.ok()) << text.status();

  for (const char* policy : {"retry", "text"}) {
    SCOPED_TRACE(policy);
    absl::StatusOr<net::AskResult> got;
    std::thread ask([&] { got = net::Ask(*stub_of(policy), req, Timeout(60)); });
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    delete cloud;  // SIGKILL
    cloud = new testing::Daemon;
    ASSERT_TRUE(testing::StartDaemon(*cloud, KVSTREAM_BIN_DIR, work,
                                     absl::StrCat("cloud-after-", policy), "kvstream-cloud",
                                     cloud_args)
                    .ok());
    ask.join();
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_GE(got->stats.transfer_attempts(), 2u);
    if (std::string(policy) == "retry") {
      EXPECT_EQ(got->token_ids, kv->token_ids);
      EXPECT_EQ(got->stats.mode(), kvstream::v1::MODE_KV);
      EXPECT_EQ(got->stats.recovery().rfind("retried after UNAVAILABLE", 0), 0u)
          << got->stats.recovery();
      // The restarted cloud does not hold the session, so the edge sent it from the start.
      EXPECT_NE(got->stats.recovery().find("(resume refused: NOT_FOUND"), std::string::npos)
          << got->stats.recovery();
      EXPECT_EQ(got->stats.resent_bytes(), 0u);
      EXPECT_GT(got->stats.wire_bytes(), kv->stats.wire_bytes()) << "the broken attempt counts";
    } else {
      EXPECT_EQ(got->token_ids, text->token_ids);
      EXPECT_EQ(got->stats.mode(), kvstream::v1::MODE_TEXT);
      EXPECT_NE(got->stats.recovery().find("fell back to text after UNAVAILABLE"),
                std::string::npos)
          << got->stats.recovery();
    }
  }
  testing::StopDaemons({edges["retry"], edges["text"], cloud});
}

// The connection between edge and cloud breaks halfway through a kv transfer (a proxy
// cuts it after half the payload's bytes). The cloud keeps the session; the edge
// reattaches and sends only the chunks the cloud had not applied, and the answer equals
// the uninterrupted one. With the edge not retrying, the parked session is freed when
// --resume_window_seconds runs out.
TEST(RecoveryTest, BrokenConnectionResumesTheSession) {
  const std::string work = net::WorkDir("", "kvstream-resume").value_or("/tmp");
  auto* cloud = new testing::Daemon;
  ASSERT_TRUE(testing::StartDaemon(
                  *cloud, KVSTREAM_BIN_DIR, work, "cloud", "kvstream-cloud",
                  {absl::StrCat("--model=scout=", kScout), absl::StrCat("--model=large=", kLarge),
                   "--measure_rates=false", "--resume_window_seconds=2"})
                  .ok());
  testing::TcpProxy proxy(cloud->port);
  ASSERT_GT(proxy.port(), 0);
  std::map<std::string, testing::Daemon*> edges;
  for (const char* policy : {"retry", "fail"}) {
    edges[policy] = new testing::Daemon;
    // 2 Mbit/s and 16 KiB chunks: the f16 cache goes out in many chunks over ~1.5 s.
    ASSERT_TRUE(
        testing::StartDaemon(
            *edges[policy], KVSTREAM_BIN_DIR, work, absl::StrCat("edge-", policy), "kvstream-edge",
            {absl::StrCat("--scout=", kScout), absl::StrCat("--cloud=127.0.0.1:", proxy.port()),
             "--cloud_model=large", "--mode=kv", "--spec=f16", "--uplink_mbps=2",
             "--chunk_bytes=16384", absl::StrCat("--on_transfer_failure=", policy)})
            .ok());
  }
  const kvstream::v1::AskRequest req = FortyItemQuestion();
  auto stub_of = [&](const char* policy) {
    return kvstream::v1::EdgeService::NewStub(
        net::MakeChannel(absl::StrCat("127.0.0.1:", edges[policy]->port)));
  };
  auto plain = net::Ask(*stub_of("retry"), req, Timeout(60));
  ASSERT_TRUE(plain.ok()) << plain.status();
  const uint64_t wire = plain->stats.wire_bytes();
  ASSERT_GT(wire, 200'000u) << "the payload must span many chunks";

  proxy.CutOnceAfter(proxy.upstream_bytes() + wire / 2);
  auto resumed = net::Ask(*stub_of("retry"), req, Timeout(60));
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(proxy.cuts(), 1);
  EXPECT_EQ(resumed->token_ids, plain->token_ids);
  EXPECT_EQ(resumed->stats.transfer_attempts(), 2u);
  EXPECT_EQ(resumed->stats.recovery().rfind("resumed after UNAVAILABLE", 0), 0u)
      << resumed->stats.recovery();
  // Only chunks the broken stream had not seen acked went again: not a second payload.
  const kvstream::v1::RequestStats& st = resumed->stats;
  EXPECT_GT(st.unacked_bytes(), 0u);
  EXPECT_LE(st.resent_bytes(), st.unacked_bytes());
  EXPECT_LT(st.resent_bytes(), wire / 2);
  // Every byte on the wire is the payload once, what was re-sent, and a second SessionOpen.
  ASSERT_GE(st.wire_bytes(), wire + st.resent_bytes());
  EXPECT_LT(st.wire_bytes() - wire - st.resent_bytes(), 2048u) << st.recovery();
  EXPECT_EQ(testing::MetricValue(cloud->metrics_port,
                                 "kvstream_cloud_resumes_total{outcome=\"resumed\"}"),
            1);

  // An edge that does not retry leaves the session parked; the window frees it.
  proxy.CutOnceAfter(proxy.upstream_bytes() + wire / 2);
  auto failed = net::Ask(*stub_of("fail"), req, Timeout(60));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_EQ(proxy.cuts(), 2);
  double parked = -1;
  for (int i = 0; i < 20 && parked != 1; ++i) {
    parked = testing::MetricValue(cloud->metrics_port, "kvstream_cloud_parked_sessions");
    if (parked != 1) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(parked, 1);
  EXPECT_EQ(testing::MetricValue(cloud->metrics_port, "kvstream_cloud_active_sessions"), 1)
      << "a parked session keeps its slot";
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(testing::MetricValue(cloud->metrics_port, "kvstream_cloud_parked_sessions"), 0);
  EXPECT_EQ(testing::MetricValue(cloud->metrics_port, "kvstream_cloud_active_sessions"), 0);
  testing::StopDaemons({edges["retry"], edges["fail"], cloud});
}

}  // namespace
}  // namespace kvstream
