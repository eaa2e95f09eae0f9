// Where the API server listens, and how each listener is secured.
//
// "unix:/path" listeners get the socket's directory created, a stale socket removed, and the
// configured mode and group. "host:port" listeners need TLS (--tls_cert/--tls_key, plus
// --tls_client_ca for mutual TLS) unless --allow_insecure_tcp says otherwise. With mutual TLS a
// client certificate is required at the handshake, unless --auth_tokens_file is given (then a
// client may authenticate with a bearer token instead; authorizer.h). Which caller may call
// what is not decided here but per call (authorizer.h): TCP callers need a grant.
#ifndef CBT_AGENT_SERVER_LISTENERS_H_
#define CBT_AGENT_SERVER_LISTENERS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/agent_options.h"

namespace cbt::agent {

struct Listener {
  std::string uri;           // as given to grpc ("unix:/path" or "host:port")
  std::string socket_path;   // unix listeners only
  std::shared_ptr<grpc::ServerCredentials> credentials;
};

absl::StatusOr<std::vector<Listener>> PrepareListeners(const AgentOptions& options);

// After the server started: applies --socket_mode and --socket_group to the unix sockets.
absl::Status SecureUnixSockets(const std::vector<Listener>& listeners,
                               const AgentOptions& options);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_LISTENERS_H_
