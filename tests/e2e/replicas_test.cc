// One edge in front of several cloud replicas, spread by gRPC's own round_robin with
// client-side health checking (--cloud=ipv4:A,B,C): sessions spread evenly, a replica
// serving other models is passed over, a killed replica costs no later request, and a
// draining replica gets no new sessions; the same through nginx (deploy/nginx/) in
// front of the replicas. Prints requests/s and TTFT with one and three replicas.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/net/ask_client.h"
#include "common/net/grpc_util.h"
#include "common/net/process.h"
#include "kvstream/v1/service.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/http_get.h"

namespace kvstream {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kScout[] = "testdata/models-2k/scout";
constexpr char kLarge[] = "testdata/models-2k/large";

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Sessions a cloud finished with OK, from its /metrics (all modes).
int OkSessions(const testing::Daemon& cloud) {
  const std::string body = testing::HttpGet(cloud.metrics_port, "/metrics").body;
  int total = 0;
  size_t at = 0;
  while ((at = body.find("\nkvstream_cloud_sessions_total{code=\"OK\"", at)) != std::string::npos) {
    at = body.find("} ", at);
    total += static_cast<int>(std::stod(body.substr(at + 2)));
  }
  return total;
}

// Waits up to 10 s for the edge's view of a cloud replica (--cloud_lb=least_loaded, from
// its /metrics) to be reachable with a load share in [low, high]; false if it never is.
bool AwaitReplicaLoad(const testing::Daemon& edge, const testing::Daemon& cloud, double low,
                      double high) {
  const std::string label = absl::StrCat("{replica=\"127.0.0.1:", cloud.port, "\"}");
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < until) {
    const double up =
        testing::MetricValue(edge.metrics_port, "kvstream_edge_cloud_replica_up" + label);
    const double load =
        testing::MetricValue(edge.metrics_port, "kvstream_edge_cloud_replica_load" + label);
    if (up == 1 && load >= low && load <= high) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

kvstream::v1::AskRequest Question(int i) {
  kvstream::v1::AskRequest req;
  std::string context;
  for (int r = 0; r < 12; ++r)
    absl::StrAppend(&context, "The code of item", r, " is w", 7 * r, ". ");
  req.set_context(context);
  req.set_question(absl::StrCat("What is the code of item", i % 12, "?"));
  req.mutable_policy()->set_mode(kvstream::v1::MODE_KV);
  req.mutable_policy()->set_spec("int8");
  req.mutable_policy()->set_max_tokens(4);
  return req;
}

struct Outcome {
  double start = 0, seconds = 0, ttft = 0;  // start: since the run began
  absl::StatusCode code = absl::StatusCode::kOk;
};

// `clients` threads asking back to back until `stop` (or `per_client` asks each).
std::vector<Outcome> AskMany(int edge_port, int clients, int per_client, Clock::time_point t0,
                             const std::atomic<bool>* stop = nullptr) {
  std::mutex mu;
  std::vector<Outcome> out;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = kvstream::v1::EdgeService::NewStub(
          net::MakeChannel(absl::StrCat("127.0.0.1:", edge_port)));
      for (int i = 0; i < per_client && !(stop != nullptr && *stop); ++i) {
        net::AskCall call;
        call.timeout_seconds = 30;
        Outcome o;
        const auto s = Clock::now();
        o.start = Seconds(t0, s);
        auto r = net::Ask(*stub, Question(c * 100 + i), call);
        o.seconds = Seconds(s, Clock::now());
        o.code = r.status().code();
        if (r.ok()) o.ttft = r->stats.ttft_seconds();
        std::lock_guard<std::mutex> lock(mu);
        out.push_back(o);
      }
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// Every one of `runs` answered, and each replica took within 20% of an even share.
void ExpectEvenSpread(const std::vector<Outcome>& runs, const std::vector<testing::Daemon*>& clouds,
                      const char* how) {
  int ok = 0;
  for (const Outcome& o : runs) ok += o.code == absl::StatusCode::kOk;
  EXPECT_EQ(ok, static_cast<int>(runs.size()));
  std::vector<int> spread;
  for (auto* c : clouds) spread.push_back(OkSessions(*c));
  std::printf("%zu kv requests %s: %s sessions per replica\n", runs.size(), how,
              absl::StrJoin(spread, ", ").c_str());
  const double even = static_cast<double>(runs.size()) / clouds.size();
  for (int n : spread) {
    EXPECT_GE(n, 0.8 * even) << "within 20% of an even spread";
    EXPECT_LE(n, 1.2 * even) << "within 20% of an even spread";
  }
}

class ReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override { work_ = net::WorkDir("", "kvstream-replicas").value_or("/tmp"); }
  testing::Daemon* StartCloud(const std::string& name, bool with_scout,
                              const std::string& max_sessions = "") {
    auto* d = new testing::Daemon;
    std::vector<std::string> args = {absl::StrCat("--model=large=", kLarge),
                                     "--measure_rates=false"};
    if (with_scout) args.push_back(absl::StrCat("--model=scout=", kScout));
    if (!max_sessions.empty()) args.push_back("--max_sessions=" + max_sessions);
    EXPECT_TRUE(
        testing::StartDaemon(*d, KVSTREAM_BIN_DIR, work_, name, "kvstream-cloud", args).ok());
    return d;
  }
  testing::Daemon* StartEdge(const std::string& name, const std::vector<testing::Daemon*>& clouds,
                             std::vector<std::string> extra = {}) {
    std::vector<std::string> addrs;
    for (auto* c : clouds) addrs.push_back(absl::StrCat("127.0.0.1:", c->port));
    auto* d = new testing::Daemon;
    std::vector<std::string> args = {absl::StrCat("--scout=", kScout),
                                     "--cloud=ipv4:" + absl::StrJoin(addrs, ","),
                                     "--cloud_model=large"};
    args.insert(args.end(), extra.begin(), extra.end());
    EXPECT_TRUE(
        testing::StartDaemon(*d, KVSTREAM_BIN_DIR, work_, name, "kvstream-edge", args).ok());
    return d;
  }
  // Another client's idle text session on `cloud`, held open until destroyed.
  struct Holder {
    std::unique_ptr<kvstream::v1::CloudService::Stub> stub;
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<kvstream::v1::Uplink, kvstream::v1::Downlink>> stream;
    ~Holder() { ctx.TryCancel(); }
  };
  static std::unique_ptr<Holder> Hold(const testing::Daemon& cloud, const std::string& id) {
    auto h = std::make_unique<Holder>();
    h->stub = kvstream::v1::CloudService::NewStub(
        net::MakeChannel(absl::StrCat("127.0.0.1:", cloud.port)));
    h->stream = h->stub->Transfer(&h->ctx);
    kvstream::v1::Uplink up;
    up.mutable_open()->set_session_id(id);
    up.mutable_open()->set_mode(kvstream::v1::MODE_TEXT);
    up.mutable_open()->set_model_name("large");
    up.mutable_open()->add_prompt_tokens(1);
    up.mutable_open()->add_prompt_tokens(2);
    EXPECT_TRUE(h->stream->Write(up));
    kvstream::v1::Downlink d;
    EXPECT_TRUE(h->stream->Read(&d) && d.has_opened()) << "the holder's session is open";
    return h;
  }
  std::string work_;
};

TEST_F(ReplicasTest, RoundRobinSpreadsSessionsAndPassesOverAReplicaServingOtherModels) {
  std::vector<testing::Daemon*> clouds;
  for (int i = 0; i < 3; ++i) clouds.push_back(StartCloud(absl::StrCat("cloud", i), true));
  testing::Daemon* odd = StartCloud("cloud-odd", false);  // no scout: another model card
  testing::Daemon* edge = StartEdge("edge", {clouds[0], odd, clouds[1], clouds[2]});
  const auto runs = AskMany(edge->port, 4, 15, Clock::now());
  ExpectEvenSpread(runs, clouds, "over 3 replicas");
  std::printf("the odd replica: %d sessions\n", OkSessions(*odd));
  EXPECT_EQ(OkSessions(*odd), 0) << "a replica serving another model card gets no sessions";
  testing::StopDaemons({edge, odd, clouds[0], clouds[1], clouds[2]});
}

// One replica is killed (SIGKILL) while 4 clients ask back to back, another drained
// (SIGTERM). Requests in flight on the killed one are sent again to another replica or
// fail UNAVAILABLE; none hangs, and every request started after the kill answers.
TEST_F(ReplicasTest, KilledAndDrainingReplicasCostNoLaterRequest) {
  std::vector<testing::Daemon*> clouds;
  for (int i = 0; i < 3; ++i) clouds.push_back(StartCloud(absl::StrCat("cloud", i), true));
  testing::Daemon* edge = StartEdge("edge", clouds);
  std::atomic<bool> stop{false};
  const auto t0 = Clock::now();
  std::vector<Outcome> runs;
  std::thread load([&] { runs = AskMany(edge->port, 4, 1000, t0, &stop); });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const double killed_at = Seconds(t0, Clock::now());
  ASSERT_EQ(::kill(clouds[0]->process.pid(), SIGKILL), 0);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const int drained_before = OkSessions(*clouds[1]);
  ASSERT_EQ(::kill(clouds[1]->process.pid(), SIGTERM), 0);
  const double drained_at = Seconds(t0, Clock::now());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  load.join();
  int after_kill = 0, failed_after = 0, in_flight = 0;
  double worst_in_flight = 0;
  for (const Outcome& o : runs) {
    EXPECT_TRUE(o.code == absl::StatusCode::kOk || o.code == absl::StatusCode::kUnavailable)
        << absl::StatusCodeToString(o.code);
    EXPECT_LT(o.seconds, 10) << "no request hangs";
    if (o.start < killed_at && o.start + o.seconds > killed_at) {
      ++in_flight;
      worst_in_flight = std::max(worst_in_flight, o.start + o.seconds - killed_at);
    }
    if (o.start > killed_at) {
      ++after_kill;
      failed_after += o.code != absl::StatusCode::kOk;
    }
  }
  std::printf(
      "%zu requests; %d in flight at the kill (all done %.3f s after it); %d started "
      "after it, %d failed\n",
      runs.size(), in_flight, worst_in_flight, after_kill, failed_after);
  EXPECT_GT(after_kill, 8);
  EXPECT_EQ(failed_after, 0);
  // The drained replica finished what it had and took no new session after its drain
  // began (its log says so; its /metrics closes with it).
  auto code = clouds[1]->process.Stop(20);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  int started_after_drain = 0;
  for (const Outcome& o : runs) started_after_drain += o.start > drained_at + 0.5;
  EXPECT_GT(started_after_drain, 4);
  // Its log: no more sessions finished after the drain began than the 4 clients can have
  // had in flight then.
  std::ifstream log(absl::StrCat(work_, "/cloud1.log"));
  std::string line;
  int done_after_drain = -1;
  while (std::getline(log, line)) {
    if (line.find("health NOT_SERVING, draining") != std::string::npos) done_after_drain = 0;
    if (done_after_drain >= 0 && line.find(" done: ") != std::string::npos) ++done_after_drain;
  }
  EXPECT_GE(done_after_drain, 0) << "the replica logged its drain";
  EXPECT_LE(done_after_drain, 4);
  std::printf("drain: replica 1 had %d sessions before SIGTERM, %d finished after\n",
              drained_before, done_after_drain);
  testing::StopDaemons({edge, clouds[2]});
  delete clouds[0];
  delete clouds[1];
}

// nginx with deploy/nginx/kvstream-cloud.conf in front of 3 replicas, the edge reaching
// it as one address: requests spread over the replicas, and after one is killed every
// later request answers (nginx skips the refused replica; streams that were on it are
// sent again by the edge).
TEST_F(ReplicasTest, NginxInFrontSpreadsSessionsAndSurvivesAKilledReplica) {
  const char* nginx = "/usr/sbin/nginx";
  if (::access(nginx, X_OK) != 0) {
    GTEST_SKIP() << "no " << nginx << " (scripts/install-deps.sh installs nginx-light)";
  }
  std::vector<testing::Daemon*> clouds;
  for (int i = 0; i < 3; ++i) clouds.push_back(StartCloud(absl::StrCat("cloud", i), true));
  const int port = testing::FreePort();
  ASSERT_GT(port, 0);
  // The deployed file, with its replicas and port pointed at this test's.
  std::ifstream in("deploy/nginx/kvstream-cloud.conf");
  std::string conf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (int i = 0; i < 3; ++i) {
    const std::string from = absl::StrCat("server cloud-", i, ":50052");
    ASSERT_NE(conf.find(from), std::string::npos) << from;
    conf.replace(conf.find(from), from.size(), absl::StrCat("server 127.0.0.1:", clouds[i]->port));
  }
  const std::string listen = "listen 50052 http2;";
  ASSERT_NE(conf.find(listen), std::string::npos);
  conf.replace(conf.find(listen), listen.size(),
               absl::StrCat("listen 127.0.0.1:", port, " http2;"));
  std::ofstream(work_ + "/kvstream-cloud.conf") << conf;
  std::ofstream(work_ + "/nginx.conf") << absl::StrCat(
      "daemon off;\nworker_processes 1;\npid ", work_, "/nginx.pid;\nerror_log ", work_,
      "/nginx-error.log warn;\nevents { worker_connections 512; }\nhttp {\n  access_log off;\n",
      "  client_body_temp_path ", work_, "/body;\n  proxy_temp_path ", work_, "/proxy;\n",
      "  fastcgi_temp_path ", work_, "/fastcgi;\n  uwsgi_temp_path ", work_, "/uwsgi;\n",
      "  scgi_temp_path ", work_, "/scgi;\n  include ", work_, "/kvstream-cloud.conf;\n}\n");
  net::ChildProcess proxy;
  ASSERT_TRUE(proxy
                  .Start({nginx, "-e", work_ + "/nginx-error.log", "-p", work_, "-c",
                          work_ + "/nginx.conf"},
                         work_ + "/nginx.log")
                  .ok());
  auto* edge = new testing::Daemon;
  ASSERT_TRUE(testing::StartDaemon(
                  *edge, KVSTREAM_BIN_DIR, work_, "edge", "kvstream-edge",
                  {absl::StrCat("--scout=", kScout), absl::StrCat("--cloud=127.0.0.1:", port),
                   "--cloud_model=large", "--cloud_health_check=false"})
                  .ok())
      << "edge (or nginx: see " << work_ << "/nginx-error.log)";
  const auto runs = AskMany(edge->port, 4, 15, Clock::now());
  ExpectEvenSpread(runs, clouds, "through nginx");
  std::atomic<bool> stop{false};
  const auto t0 = Clock::now();
  std::vector<Outcome> after;
  std::thread load([&] { after = AskMany(edge->port, 4, 1000, t0, &stop); });
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double killed_at = Seconds(t0, Clock::now());
  ASSERT_EQ(::kill(clouds[0]->process.pid(), SIGKILL), 0);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  stop = true;
  load.join();
  int started_after = 0, failed = 0;
  for (const Outcome& o : after) {
    EXPECT_LT(o.seconds, 10) << "no request hangs";
    if (o.start > killed_at) {
      ++started_after;
      failed += o.code != absl::StatusCode::kOk;
    }
  }
  std::printf("through nginx, replica 0 killed: %d requests started after it, %d failed\n",
              started_after, failed);
  EXPECT_GT(started_after, 8);
  EXPECT_EQ(failed, 0);
  testing::StopDaemons({edge, clouds[1], clouds[2]});
  auto code = proxy.Stop(10);
  EXPECT_TRUE(code.ok()) << code.status();
  delete clouds[0];
}

// Replicas with room for one session each. With the first one held full by another
// client, the edge's sessions that round robin sends there are refused at SessionOpen and
// offered to the next replica: every request answers. With all three full, the client
// gets RESOURCE_EXHAUSTED naming the limit.
TEST_F(ReplicasTest, AFullReplicaIsPassedOverAndAllFullIsResourceExhausted) {
  std::vector<testing::Daemon*> clouds;
  for (int i = 0; i < 3; ++i) clouds.push_back(StartCloud(absl::StrCat("cloud", i), true, "1"));
  testing::Daemon* edge = StartEdge("edge", clouds);
  std::vector<std::unique_ptr<Holder>> holders;
  holders.push_back(Hold(*clouds[0], "holder-0"));
  const auto runs = AskMany(edge->port, 1, 12, Clock::now());
  int ok = 0;
  for (const Outcome& o : runs) ok += o.code == absl::StatusCode::kOk;
  EXPECT_EQ(ok, 12) << "a full replica costs no request while another has room";
  EXPECT_EQ(OkSessions(*clouds[0]), 0);
  EXPECT_EQ(OkSessions(*clouds[1]) + OkSessions(*clouds[2]), 12);
  holders.push_back(Hold(*clouds[1], "holder-1"));
  holders.push_back(Hold(*clouds[2], "holder-2"));
  auto stub =
      kvstream::v1::EdgeService::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", edge->port)));
  net::AskCall call;
  call.timeout_seconds = 30;
  const auto full = net::Ask(*stub, Question(0), call);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  EXPECT_NE(full.status().message().find("--max_sessions=1"), std::string::npos) << full.status();
  holders.clear();
  testing::StopDaemons({edge, clouds[0], clouds[1], clouds[2]});
}

// --cloud_lb=least_loaded: with one replica 3/4 full (another client's sessions), every
// session goes to the other, and none is refused on the way; with both empty, sessions
// spread over both.
TEST_F(ReplicasTest, LeastLoadedSendsSessionsWhereThereIsRoom) {
  std::vector<testing::Daemon*> clouds;
  for (int i = 0; i < 2; ++i) clouds.push_back(StartCloud(absl::StrCat("cloud", i), true, "4"));
  std::vector<std::unique_ptr<Holder>> holders;
  for (int i = 0; i < 3; ++i) holders.push_back(Hold(*clouds[0], absl::StrCat("holder-", i)));
  testing::Daemon* edge = StartEdge("edge", clouds, {"--cloud_lb=least_loaded"});
  ASSERT_TRUE(AwaitReplicaLoad(*edge, *clouds[0], 0.75, 0.75)) << "the edge never saw 3 of 4";
  ASSERT_TRUE(AwaitReplicaLoad(*edge, *clouds[1], 0, 0)) << "the edge never saw the free one";
  auto stub =
      kvstream::v1::EdgeService::NewStub(net::MakeChannel(absl::StrCat("127.0.0.1:", edge->port)));
  for (int i = 0; i < 12; ++i) {
    net::AskCall call;
    call.timeout_seconds = 30;
    auto r = net::Ask(*stub, Question(i), call);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->stats.recovery(), "") << "no replica refused it";
  }
  EXPECT_EQ(OkSessions(*clouds[0]), 0);
  EXPECT_EQ(OkSessions(*clouds[1]), 12);
  holders.clear();
  ASSERT_TRUE(AwaitReplicaLoad(*edge, *clouds[0], 0, 0)) << "the holders' sessions never ended";
  const auto runs = AskMany(edge->port, 1, 12, Clock::now());
  for (const Outcome& o : runs) EXPECT_EQ(o.code, absl::StatusCode::kOk);
  const int to_first = OkSessions(*clouds[0]), to_second = OkSessions(*clouds[1]) - 12;
  std::printf(
      "least_loaded: 12 of 12 to the free replica while the other was 3/4 full; then "
      "%d and %d of 12 with both free\n",
      to_first, to_second);
  EXPECT_GE(to_first, 4);
  EXPECT_GE(to_second, 4);
  testing::StopDaemons({edge, clouds[0], clouds[1]});
}

TEST_F(ReplicasTest, ThroughputWithOneAndThreeReplicas) {
  std::vector<testing::Daemon*> clouds;
  for (int i = 0; i < 3; ++i) clouds.push_back(StartCloud(absl::StrCat("cloud", i), true));
  testing::Daemon* one = StartEdge("edge-one", {clouds[0]});
  testing::Daemon* three = StartEdge("edge-three", clouds);
  for (auto [name, edge] :
       {std::pair<const char*, testing::Daemon*>{"1 replica", one}, {"3 replicas", three}}) {
    const auto t0 = Clock::now();
    const auto runs = AskMany(edge->port, 4, 10, t0);
    const double wall = Seconds(t0, Clock::now());
    std::vector<double> ttft;
    for (const Outcome& o : runs) {
      EXPECT_EQ(o.code, absl::StatusCode::kOk);
      ttft.push_back(o.ttft);
    }
    std::printf(
        "%s: %zu kv int8 requests (4 clients, tiny models, loopback) in %.2f s: %.1f "
        "requests/s, TTFT p50 %.3f s p99 %.3f s\n",
        name, runs.size(), wall, runs.size() / wall, Percentile(ttft, 0.5), Percentile(ttft, 0.99));
  }
  testing::StopDaemons({one, three, clouds[0], clouds[1], clouds[2]});
}

}  // namespace
}  // namespace kvstream
