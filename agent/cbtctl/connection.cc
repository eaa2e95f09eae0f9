#include "cbtctl/connection.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace cbt::cbtctl {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, " ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

bool IsUnixAddress(const std::string& address) { return address.rfind("unix", 0) == 0; }

absl::Status ValidateConnectionOptions(const GlobalOptions& options) {
  const bool any_tls = !options.tls_ca.empty() || !options.tls_cert.empty() ||
                       !options.tls_key.empty() || !options.tls_server_name.empty();
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (!options.token_file.empty() && (IsUnixAddress(options.address) || options.insecure)) {
    // gRPC sends call credentials only over a secure channel, and a token must not travel in
    // the clear anyway.
    return absl::InvalidArgumentError("--token_file needs a TLS connection");
  }
  if (IsUnixAddress(options.address)) {
    if (any_tls) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS options do not apply to unix socket ", options.address));
    }
    return absl::OkStatus();
  }
  if (options.insecure && any_tls) {
    return absl::InvalidArgumentError("--insecure excludes the --tls_* options");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const GlobalOptions& options) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(-1);  // map chunks are the server's choice
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (IsUnixAddress(options.address) || options.insecure) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;  // empty roots: the system's CA store
    if (!options.tls_ca.empty()) {
      auto ca = ReadPem(options.tls_ca, "--tls_ca");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (!options.tls_cert.empty()) {
      auto cert = ReadPem(options.tls_cert, "--tls_cert");
      if (!cert.ok()) return cert.status();
      auto key = ReadPem(options.tls_key, "--tls_key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    if (!options.tls_server_name.empty()) {
      arguments.SetSslTargetNameOverride(options.tls_server_name);
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.token_file.empty()) {
      auto token = ReadPem(options.token_file, "--token_file");
      if (!token.ok()) return token.status();
      const std::string trimmed(absl::StripAsciiWhitespace(*token));
      if (trimmed.empty() || trimmed.find_first_of(" \t\r\n") != std::string::npos) {
        return absl::FailedPreconditionError(
            absl::StrCat("--token_file ", options.token_file, ": expected one token"));
      }
      credentials =
          grpc::CompositeChannelCredentials(credentials, grpc::AccessTokenCredentials(trimmed));
    }
  }
  return grpc::CreateCustomChannel(options.address, credentials, arguments);
}

void SetDeadline(grpc::ClientContext* context, const GlobalOptions& options, bool streaming) {
  double seconds = options.timeout_seconds.value_or(streaming ? 0 : kDefaultTimeoutSeconds);
  if (seconds <= 0) return;
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
}

}  // namespace cbt::cbtctl
