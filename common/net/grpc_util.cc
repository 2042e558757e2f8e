#include "common/net/grpc_util.h"

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/base/quote.h"
#include "common/base/status.h"

namespace kvstream::net {

namespace {
// Channel arguments every channel to a daemon carries: the message limits both sides
// set, keepalive pings, and a reconnect backoff bounded at kMaxReconnectBackoffMs
// (gRPC's own grows to 120 s: after a long outage the edge kept failing for 21 s after
// the cloud was back).
grpc::ChannelArguments LimitedChannelArgs(double keepalive_seconds) {
  grpc::ChannelArguments args;
  if (keepalive_seconds > 0) {
    const int ms = static_cast<int>(keepalive_seconds * 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ms);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // no cap on pings between calls
  }
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  return args;
}

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read TLS ", what, " file ", path));
  std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (pem.find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS ", what, " file ", path, " holds no PEM block"));
  }
  return pem;
}

// Whether the private key in `pair` belongs to the first certificate of its chain. gRPC
// finds out only at a handshake when it reloads files, so a daemon would start and then
// fail every TLS connection.
absl::Status CheckKeyMatches(const grpc::SslServerCredentialsOptions::PemKeyCertPair& pair,
                             const TlsFiles& tls) {
  auto read = [](const std::string& pem, auto reader) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
    // An empty passphrase: OpenSSL would otherwise ask for one on the terminal.
    return bio == nullptr ? nullptr : reader(bio.get(), nullptr, nullptr, const_cast<char*>(""));
  };
  std::unique_ptr<X509, decltype(&X509_free)> cert(read(pair.cert_chain, PEM_read_bio_X509),
                                                   X509_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      read(pair.private_key, PEM_read_bio_PrivateKey), EVP_PKEY_free);
  const bool matches =
      cert != nullptr && key != nullptr && X509_check_private_key(cert.get(), key.get()) == 1;
  ERR_clear_error();
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate file ", tls.cert, " holds no readable certificate"));
  }
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS key file ", tls.key,
                     " holds no readable private key (an encrypted key is not supported)"));
  }
  if (!matches) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS key file ", tls.key, " is not the key of certificate ", tls.cert));
  }
  return absl::OkStatus();
}

// The certificate chain and private key named by `tls` (both set by the caller's checks).
absl::StatusOr<grpc::SslServerCredentialsOptions::PemKeyCertPair> ReadCertAndKey(
    const TlsFiles& tls) {
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(tls.cert, "certificate"));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem(tls.key, "key"));
  RETURN_IF_ERROR(CheckKeyMatches(pair, tls));
  return pair;
}
}  // namespace

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   LimitedChannelArgs(kDefaultKeepaliveSeconds));
}

namespace {

absl::Status CheckReloadSeconds(const TlsFiles& tls) {
  if (tls.reload_seconds >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("TLS reload interval: expected 0 or more seconds, found ", tls.reload_seconds));
}

// Credentials that read `tls`'s files every `tls.reload_seconds` (gRPC's file watcher).
std::shared_ptr<grpc::ServerCredentials> ReloadingServerCredentials(const TlsFiles& tls) {
  auto files = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key, tls.cert, tls.ca, tls.reload_seconds);
  grpc::experimental::TlsServerCredentialsOptions o(files);
  o.watch_identity_key_cert_pairs();
  if (tls.ca.empty()) {
    o.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    o.watch_root_certs();
    o.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(o);
}

std::shared_ptr<grpc::ChannelCredentials> ReloadingChannelCredentials(const TlsFiles& tls) {
  auto files = tls.cert.empty()
                   ? std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
                         tls.ca, tls.reload_seconds)
                   : std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
                         tls.key, tls.cert, tls.ca, tls.reload_seconds);
  grpc::experimental::TlsChannelCredentialsOptions o;
  o.set_certificate_provider(files);
  o.watch_root_certs();
  if (!tls.cert.empty()) o.watch_identity_key_cert_pairs();
  return grpc::experimental::TlsCredentials(o);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (tls.cert.empty() || tls.key.empty()) {
    return absl::InvalidArgumentError("server TLS needs both a certificate and its key");
  }
  RETURN_IF_ERROR(CheckReloadSeconds(tls));
  grpc::SslServerCredentialsOptions o;
  ASSIGN_OR_RETURN(auto pair, ReadCertAndKey(tls));  // the files are readable now
  o.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.ca.empty()) {
    ASSIGN_OR_RETURN(o.pem_root_certs, ReadPem(tls.ca, "client CA"));
    o.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  if (tls.reload_seconds > 0) return ReloadingServerCredentials(tls);
  return grpc::SslServerCredentials(o);
}

absl::StatusOr<std::string> ReplicaServiceConfig(const std::string& lb_policy,
                                                 const std::string& health_service) {
  if (lb_policy != "round_robin" && lb_policy != "pick_first") {
    return absl::InvalidArgumentError(absl::StrCat(
        "load balancing policy: expected round_robin or pick_first, found '", lb_policy, "'"));
  }
  std::string config = absl::StrCat(R"({"loadBalancingConfig": [{")", lb_policy, R"(": {}}])");
  if (!health_service.empty()) {
    absl::StrAppend(&config, R"(, "healthCheckConfig": {"serviceName": ")", health_service,
                    R"("})");
  }
  return absl::StrCat(config, "}");
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                           const TlsFiles& tls,
                                                           double keepalive_seconds,
                                                           const std::string& service_config) {
  grpc::ChannelArguments args = LimitedChannelArgs(keepalive_seconds);
  if (!service_config.empty()) args.SetServiceConfigJSON(service_config);
  if (!tls.enabled()) {
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  }
  if (tls.ca.empty())
    return absl::InvalidArgumentError(
        "client TLS needs the CA that signed the server's certificate");
  if (tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs its key, and a key its certificate");
  }
  RETURN_IF_ERROR(CheckReloadSeconds(tls));
  grpc::SslCredentialsOptions o;
  ASSIGN_OR_RETURN(o.pem_root_certs, ReadPem(tls.ca, "CA"));
  if (!tls.cert.empty()) {
    ASSIGN_OR_RETURN(const auto pair, ReadCertAndKey(tls));
    o.pem_cert_chain = pair.cert_chain;
    o.pem_private_key = pair.private_key;
  }
  if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
  return grpc::CreateCustomChannel(
      address, tls.reload_seconds > 0 ? ReloadingChannelCredentials(tls) : grpc::SslCredentials(o),
      args);
}

void ApplyServerLimits(grpc::ServerBuilder& builder, double keepalive_seconds) {
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  if (keepalive_seconds > 0) {
    const int ms = static_cast<int>(keepalive_seconds * 1000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms);
  }
  // Clients (edges, apps) may ping idle connections; gRPC's server default would answer
  // pings closer than 5 minutes apart with GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             kMinClientPingSeconds * 1000);
}

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  // Bounded: a message quoting a huge input would not fit in the status metadata.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      base::Bounded(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status, const std::string& prefix) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      prefix + status.error_message());
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

namespace {
sigset_t ShutdownSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);  // reload, handled by the daemon's loop (never the default: exit)
  return set;
}
}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  const sigset_t set = ShutdownSet();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

absl::Status WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write port file ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace kvstream::net
