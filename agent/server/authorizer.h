// Per-method authorization of cbtagent.v1.CbtAgent calls.
//
// Every method is either read-only or mutating (kMethodAccess in authorizer.cc; the daemon
// refuses to start when a method of the service is missing there). A call is allowed when the
// caller's access (authz_policy.h) reaches the method's. Callers are known by:
//   - the Unix socket they came through (the policy's `unix` line, default write);
//   - a verified client certificate (mTLS): subject CN, DNS and URI SANs;
//   - a bearer token ("authorization: Bearer <token>" metadata, auth_tokens.h).
// Refusals:
//   UNAUTHENTICATED    no identity with any access (e.g. TCP without certificate or token), or
//                      a bad credential: malformed authorization metadata, an unknown or
//                      expired token (a bad credential is refused even where the transport
//                      alone would be enough)
//   PERMISSION_DENIED  the caller is known but its access does not reach the method's
// The grpc.health.v1 and reflection services are not CbtAgent methods and stay open.
#ifndef CBT_AGENT_SERVER_AUTHORIZER_H_
#define CBT_AGENT_SERVER_AUTHORIZER_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/access.h"
#include "server/auth_tokens.h"
#include "server/authz_policy.h"

namespace cbt::agent {

// What a call carries that could identify its caller.
struct CallerCredentials {
  bool unix_socket = false;                // came through a Unix-socket listener
  std::vector<std::string> cert_cns;       // verified client certificate (TLS) only
  std::vector<std::string> cert_sans;      // its DNS and URI subject alternative names
  std::vector<std::string> authorization;  // every "authorization" metadata value
};

// Reads them from the call. The Unix/TCP distinction comes from the address family of the
// accepted socket (grpc's peer string "unix:..." vs "ipv4:"/"ipv6:"), which the client cannot
// choose; certificate names only from a TLS auth context whose peer grpc verified.
CallerCredentials CredentialsOf(const grpc::ServerContext& context);

struct AuthzDecision {
  absl::Status status;  // OK, UNAUTHENTICATED or PERMISSION_DENIED with the reason
  std::string caller;   // for logs: "unix", "token:NAME", "cert-cn:NAME", ... or "anonymous"
};

class Authorizer {
 public:
  Authorizer(AuthzPolicy policy, TokenStore tokens);

  // The access `method` (a CbtAgent method name, e.g. "AttachTracker") needs; kWrite for names
  // not in the table, so that an unclassified method fails closed.
  static Access Required(absl::string_view method);
  // InternalError naming every method of cbtagent.v1.CbtAgent that the table lacks.
  static absl::Status CheckEveryMethodClassified();

  AuthzDecision Decide(const CallerCredentials& caller, absl::string_view method,
                       absl::Time now) const;

  const AuthzPolicy& policy() const { return policy_; }
  const TokenStore& tokens() const { return tokens_; }

 private:
  const AuthzPolicy policy_;
  const TokenStore tokens_;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_AUTHORIZER_H_
