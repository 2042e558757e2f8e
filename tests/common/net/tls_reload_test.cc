// TLS files read again while running (TlsFiles::reload_seconds): a server whose
// certificate is replaced in place serves the new one to new connections, and a channel
// whose CA file is replaced trusts the new CA when it connects again; with the files read
// once, neither happens. A connection counts when the channel gets READY, which needs the
// handshake to pass.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/net/grpc_util.h"
#include "kvstream/v1/service.grpc.pb.h"

namespace kvstream::net {
namespace {

namespace fs = std::filesystem;

// Two CAs, each with a server certificate for 127.0.0.1 / localhost, made once for the
// suite; each test installs the files it serves and trusts in a directory of its own.
class TlsReloadTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    keys_ = fs::temp_directory_path() / ("kvstream-tls-" + std::to_string(::getpid()));
    fs::create_directories(keys_);
    for (const char* name : {"a", "b"}) {
      const std::string n = name;
      const std::string script = absl::StrCat(
          "set -e; cd ", keys_.string(), "; ",
          "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-", n, ".key -out ca-", n,
          ".pem -days 2 -subj '/CN=test CA ", n, "' 2>/dev/null; ",
          "openssl req -newkey rsa:2048 -nodes -keyout server-", n, ".key -out server-", n,
          ".csr -subj '/CN=localhost' 2>/dev/null; ",
          "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > ext.cnf; ",
          "openssl x509 -req -in server-", n, ".csr -CA ca-", n, ".pem -CAkey ca-", n,
          ".key -CAcreateserial -out server-", n, ".pem -days 2 -extfile ext.cnf 2>/dev/null");
      ASSERT_EQ(std::system(("bash -c \"" + script + "\"").c_str()), 0)
          << "openssl could not make test certificates";
    }
  }
  static void TearDownTestSuite() { fs::remove_all(keys_); }
  void SetUp() override {
    dir_ = keys_ / testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
    for (const auto& f : fs::directory_iterator(keys_)) {
      if (f.is_regular_file()) fs::copy_file(f.path(), dir_ / f.path().filename());
    }
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Replaces `to` with a copy of `from` in one rename, as a secret mount or a certificate
  // manager does.
  void Install(const std::string& from, const std::string& to) const {
    fs::copy_file(Path(from), Path(to + ".new"), fs::copy_options::overwrite_existing);
    fs::rename(Path(to + ".new"), Path(to));
  }

  // A server on 127.0.0.1:`port` (0: any) with the certificate in server.pem / server.key.
  std::unique_ptr<grpc::Server> Serve(int reload_seconds, int* port) const {
    auto credentials =
        ServerCredentials({"", Path("server.pem"), Path("server.key"), "", reload_seconds});
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    if (!credentials.ok()) return nullptr;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", *port), *credentials, port);
    builder.RegisterService(&service_);  // its methods are UNIMPLEMENTED; a server needs one
    return builder.BuildAndStart();
  }

  // Whether a channel trusting `ca` gets a connection within `seconds`. Each channel gets
  // its own keepalive, so that no two share a connection (gRPC pools connections of
  // channels whose arguments are equal).
  bool Connects(const std::shared_ptr<grpc::Channel>& channel, double seconds = 4) const {
    return channel->WaitForConnected(std::chrono::system_clock::now() +
                                     std::chrono::milliseconds(static_cast<int>(seconds * 1000)));
  }
  std::shared_ptr<grpc::Channel> Channel(int port, const std::string& ca, int reload_seconds) {
    auto channel = MakeChannel(absl::StrCat("127.0.0.1:", port),
                               {Path(ca), "", "", "", reload_seconds}, 100 + channels_++);
    EXPECT_TRUE(channel.ok()) << channel.status();
    return *channel;
  }

  static inline fs::path keys_;
  fs::path dir_;
  int channels_ = 0;
  mutable kvstream::v1::CloudService::Service service_;
};

TEST_F(TlsReloadTest, AServerServesACertificateReplacedInPlace) {
  Install("server-a.pem", "server.pem");
  Install("server-a.key", "server.key");
  int port = 0;
  const auto server = Serve(/*reload_seconds=*/1, &port);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(Connects(Channel(port, "ca-a.pem", 0)));
  EXPECT_FALSE(Connects(Channel(port, "ca-b.pem", 0), 1)) << "CA b trusted before the rotation";
  Install("server-b.key", "server.key");
  Install("server-b.pem", "server.pem");
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // two reload periods
  EXPECT_TRUE(Connects(Channel(port, "ca-b.pem", 0))) << "the new certificate is not served";
  EXPECT_FALSE(Connects(Channel(port, "ca-a.pem", 0), 1)) << "the old certificate is still served";
  server->Shutdown();
}

TEST_F(TlsReloadTest, FilesReadOnceKeepTheOldCertificate) {
  Install("server-a.pem", "server.pem");
  Install("server-a.key", "server.key");
  int port = 0;
  const auto server = Serve(/*reload_seconds=*/0, &port);
  ASSERT_NE(server, nullptr);
  Install("server-b.key", "server.key");
  Install("server-b.pem", "server.pem");
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_TRUE(Connects(Channel(port, "ca-a.pem", 0)));
  EXPECT_FALSE(Connects(Channel(port, "ca-b.pem", 0), 1));
  server->Shutdown();
}

// A channel connected to a server with certificate a; that server goes, its CA file is
// replaced by CA b, and a server with certificate b comes up on the same port: the
// reloading channel connects to it again, the one that read its CA once cannot.
TEST_F(TlsReloadTest, AChannelTrustsACaReplacedInPlace) {
  Install("server-a.pem", "server.pem");
  Install("server-a.key", "server.key");
  Install("ca-a.pem", "ca.pem");
  Install("ca-a.pem", "ca-once.pem");
  int port = 0;
  auto server = Serve(0, &port);
  ASSERT_NE(server, nullptr);
  const auto reloading = Channel(port, "ca.pem", /*reload_seconds=*/1);
  const auto once = Channel(port, "ca-once.pem", 0);
  ASSERT_TRUE(Connects(reloading));
  ASSERT_TRUE(Connects(once));
  server->Shutdown();
  server.reset();
  Install("ca-b.pem", "ca.pem");
  Install("ca-b.pem", "ca-once.pem");
  Install("server-b.key", "server.key");
  Install("server-b.pem", "server.pem");
  server = Serve(0, &port);
  ASSERT_NE(server, nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_TRUE(Connects(reloading, 6)) << "the replaced CA file was not read again";
  EXPECT_FALSE(Connects(once, 2)) << "a CA read once trusted the new certificate";
  server->Shutdown();
}

// gRPC would only find a key that is not the certificate's at the first handshake (when it
// reloads files: after the daemon has started), so it is refused when read.
TEST_F(TlsReloadTest, AKeyThatIsNotTheCertificatesIsRefused) {
  for (const int reload : {0, 1}) {
    auto server = ServerCredentials({"", Path("server-a.pem"), Path("server-b.key"), "", reload});
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(server.status().message().find("server-b.key is not the key of certificate"),
              std::string::npos)
        << server.status();
    auto channel = MakeChannel(
        "127.0.0.1:1", {Path("ca-a.pem"), Path("server-a.pem"), Path("server-b.key"), "", reload});
    EXPECT_EQ(channel.status().code(), absl::StatusCode::kInvalidArgument) << channel.status();
  }
  Install("server-a.key", "broken.pem");  // a PEM block, but no certificate in it
  auto broken = ServerCredentials({"", Path("broken.pem"), Path("server-a.key"), "", 1});
  EXPECT_NE(broken.status().message().find("holds no readable certificate"), std::string::npos)
      << broken.status();
  // An encrypted key is refused, without OpenSSL asking for a passphrase.
  ASSERT_EQ(std::system(("openssl pkey -in " + Path("server-a.key") +
                         " -aes256 -passout pass:x -out " + Path("encrypted.key"))
                            .c_str()),
            0);
  auto encrypted = ServerCredentials({"", Path("server-a.pem"), Path("encrypted.key"), "", 0});
  EXPECT_NE(encrypted.status().message().find("an encrypted key is not supported"),
            std::string::npos)
      << encrypted.status();
  EXPECT_TRUE(ServerCredentials({"", Path("server-a.pem"), Path("server-a.key"), "", 1}).ok());
}

TEST(TlsFilesTest, ANegativeReloadIntervalIsRefused) {
  auto server = ServerCredentials({"", "cert.pem", "key.pem", "", -1});
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(server.status().message().find("expected 0 or more seconds, found -1"),
            std::string::npos)
      << server.status();
  auto channel = MakeChannel("127.0.0.1:1", {"ca.pem", "", "", "", -1});
  EXPECT_EQ(channel.status().code(), absl::StatusCode::kInvalidArgument) << channel.status();
}

}  // namespace
}  // namespace kvstream::net
