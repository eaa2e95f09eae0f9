#include "server/listeners.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace cbt::agent {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": cannot read: ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status MakeParentDirectory(const std::string& socket_path) {
  const size_t slash = socket_path.rfind('/');
  if (slash == 0 || slash == std::string::npos) return absl::OkStatus();
  const std::string dir = socket_path.substr(0, slash);
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::UnavailableError(absl::StrCat("cannot create socket directory ", prefix, ": ",
                                                 std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

// A socket file left by a previous agent that is not listening any more is removed; one that
// still accepts connections means another agent runs, which is an error.
absl::Status RemoveStaleSocket(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; refusing to replace it"));
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  ::close(fd);
  if (live) {
    return absl::FailedPreconditionError(
        absl::StrCat("another process is serving on ", path, "; is an agent already running?"));
  }
  ::unlink(path.c_str());
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpCredentials(
    const AgentOptions& options, const std::string& address) {
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (options.tls_cert.empty()) {
    if (!options.tls_client_ca.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    }
    if (!options.allow_insecure_tcp) {
      return absl::InvalidArgumentError(absl::StrCat(
          "refusing to serve the API on TCP ", address,
          " without TLS: give --tls_cert and --tls_key (and --tls_client_ca for mutual TLS), "
          "or --allow_insecure_tcp on a trusted network"));
    }
    return grpc::InsecureServerCredentials();
  }
  auto cert = ReadFile(options.tls_cert, "--tls_cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadFile(options.tls_key, "--tls_key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!options.tls_client_ca.empty()) {
    auto ca = ReadFile(options.tls_client_ca, "--tls_client_ca");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    // A presented certificate is always verified. It is required at the handshake unless bearer
    // tokens are configured: then a client may come with a token instead, and one with
    // neither reaches only the authorizer, which refuses it (UNAUTHENTICATED).
    ssl.client_certificate_request =
        options.auth_tokens_file.empty()
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::vector<Listener>> PrepareListeners(const AgentOptions& options) {
  if (options.listen.empty()) return absl::InvalidArgumentError("no --listen address given");
  std::vector<Listener> listeners;
  for (const std::string& address : options.listen) {
    Listener listener;
    listener.uri = address;
    if (address.rfind("unix:", 0) == 0) {
      listener.socket_path = address.substr(5);
      if (listener.socket_path.empty() || listener.socket_path[0] != '/' ||
          listener.socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--listen=", address, ": need unix:/absolute/path shorter than 108 bytes"));
      }
      if (auto s = MakeParentDirectory(listener.socket_path); !s.ok()) return s;
      if (auto s = RemoveStaleSocket(listener.socket_path); !s.ok()) return s;
      listener.credentials = grpc::InsecureServerCredentials();  // guarded by file permissions
    } else {
      const size_t colon = address.rfind(':');
      uint32_t port = 0;
      if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
          port > 65535) {
        return absl::InvalidArgumentError(
            absl::StrCat("--listen=", address, ": expected unix:/path or host:port"));
      }
      auto credentials = TcpCredentials(options, address);
      if (!credentials.ok()) return credentials.status();
      listener.credentials = *credentials;
    }
    listeners.push_back(std::move(listener));
  }
  return listeners;
}

absl::Status SecureUnixSockets(const std::vector<Listener>& listeners,
                               const AgentOptions& options) {
  gid_t group = static_cast<gid_t>(-1);
  if (!options.socket_group.empty()) {
    uint32_t numeric = 0;
    if (absl::SimpleAtoi(options.socket_group, &numeric)) {
      group = numeric;
    } else {
      const struct group* entry = ::getgrnam(options.socket_group.c_str());
      if (entry == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("--socket_group=", options.socket_group, ": no such group"));
      }
      group = entry->gr_gid;
    }
  }
  for (const Listener& listener : listeners) {
    if (listener.socket_path.empty()) continue;
    if (::chmod(listener.socket_path.c_str(), options.socket_mode) != 0) {
      return absl::UnavailableError(absl::StrCat("chmod ", listener.socket_path, ": ",
                                                 std::strerror(errno)));
    }
    if (group != static_cast<gid_t>(-1) &&
        ::chown(listener.socket_path.c_str(), static_cast<uid_t>(-1), group) != 0) {
      return absl::UnavailableError(absl::StrCat("chown ", listener.socket_path, ": ",
                                                 std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

}  // namespace cbt::agent
