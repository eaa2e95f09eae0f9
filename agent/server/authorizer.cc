#include "server/authorizer.h"

#include <grpc/grpc_security_constants.h>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cbtagent/v1/agent.grpc.pb.h"
#include "google/protobuf/descriptor.h"

namespace cbt::agent {
namespace {

struct MethodAccess {
  const char* method;
  Access access;
};

// Every method of api/cbtagent/v1/agent.proto. Read-only methods change nothing, in the agent
// or the kernel; everything that attaches, detaches, snapshots, releases or marks is kWrite.
constexpr MethodAccess kMethodAccess[] = {
    {"GetCapabilities", Access::kRead},     {"Echo", Access::kRead},
    {"GetTracker", Access::kRead},          {"ListTrackers", Access::kRead},
    {"GetSnapshot", Access::kRead},         {"ListSnapshots", Access::kRead},
    {"WatchSnapshotEvents", Access::kRead}, {"GetCbtInfo", Access::kRead},
    {"ReadCbtMap", Access::kRead},          {"GetChangedExtents", Access::kRead},
    {"AttachTracker", Access::kWrite},      {"DetachTracker", Access::kWrite},
    {"CreateSnapshot", Access::kWrite},     {"ReleaseSnapshot", Access::kWrite},
    {"MarkDirty", Access::kWrite},
};

std::string ToString(grpc::string_ref value) { return std::string(value.data(), value.size()); }

void AddProperty(const grpc::AuthContext& auth, const char* name, std::vector<std::string>* out) {
  for (const grpc::string_ref& value : auth.FindPropertyValues(name)) {
    std::string text = ToString(value);
    if (std::find(out->begin(), out->end(), text) == out->end()) out->push_back(std::move(text));
  }
}

// "Bearer <token>": the scheme case-insensitively (RFC 7235), one space, a b64token.
bool ParseBearer(absl::string_view value, absl::string_view* token) {
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  *token = value.substr(kScheme.size());
  return IsBearerTokenSyntax(*token);
}

}  // namespace

CallerCredentials CredentialsOf(const grpc::ServerContext& context) {
  CallerCredentials caller;
  const std::string peer = context.peer();
  caller.unix_socket = absl::StartsWith(peer, "unix:") || absl::StartsWith(peer, "unix-abstract:");
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    const auto type = auth->FindPropertyValues(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
    if (std::any_of(type.begin(), type.end(), [](const grpc::string_ref& t) {
          return t == GRPC_SSL_TRANSPORT_SECURITY_TYPE || t == GRPC_TLS_TRANSPORT_SECURITY_TYPE;
        })) {
      AddProperty(*auth, GRPC_X509_CN_PROPERTY_NAME, &caller.cert_cns);
      AddProperty(*auth, GRPC_PEER_DNS_PROPERTY_NAME, &caller.cert_sans);
      AddProperty(*auth, GRPC_PEER_URI_PROPERTY_NAME, &caller.cert_sans);
    }
  }
  const auto& metadata = context.client_metadata();
  for (auto [it, end] = metadata.equal_range("authorization"); it != end; ++it) {
    caller.authorization.push_back(ToString(it->second));
  }
  return caller;
}

Authorizer::Authorizer(AuthzPolicy policy, TokenStore tokens)
    : policy_(std::move(policy)), tokens_(std::move(tokens)) {}

Access Authorizer::Required(absl::string_view method) {
  for (const MethodAccess& entry : kMethodAccess) {
    if (method == entry.method) return entry.access;
  }
  return Access::kWrite;
}

absl::Status Authorizer::CheckEveryMethodClassified() {
  // Through a generated message's descriptor, which also makes sure agent.proto is linked in.
  const google::protobuf::ServiceDescriptor* service =
      cbtagent::v1::EchoRequest::descriptor()->file()->FindServiceByName("CbtAgent");
  if (service == nullptr) return absl::InternalError("cbtagent.v1.CbtAgent is not linked in");
  std::vector<std::string> missing;
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string& name = service->method(i)->name();
    const bool known = std::any_of(std::begin(kMethodAccess), std::end(kMethodAccess),
                                   [&](const MethodAccess& m) { return name == m.method; });
    if (!known) missing.push_back(name);
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("methods without an access class (authorizer.cc): ",
                                          absl::StrJoin(missing, ", ")));
}

AuthzDecision Authorizer::Decide(const CallerCredentials& caller, absl::string_view method,
                                 absl::Time now) const {
  const Access required = Required(method);
  std::vector<std::string> identities;
  Access granted = Access::kNone;
  bool credential = false;  // a token or certificate, as opposed to the transport alone
  if (caller.unix_socket) {
    identities.push_back("unix");
    granted = policy_.unix_access();
  }
  auto decide = [&](absl::Status status) {
    return AuthzDecision{std::move(status),
                         identities.empty() ? "anonymous" : absl::StrJoin(identities, ",")};
  };

  if (caller.authorization.size() > 1) {
    return decide(absl::UnauthenticatedError("more than one authorization metadata entry"));
  }
  if (caller.authorization.size() == 1) {
    absl::string_view token;
    if (!ParseBearer(caller.authorization[0], &token)) {
      return decide(absl::UnauthenticatedError(
          "malformed authorization metadata: expected 'Bearer <token>'"));
    }
    const TokenEntry* entry = tokens_.Find(token);
    if (entry == nullptr) return decide(absl::UnauthenticatedError("unknown bearer token"));
    identities.push_back(absl::StrCat("token:", entry->name));
    if (entry->expires.has_value() && now >= *entry->expires) {
      return decide(absl::UnauthenticatedError(
          absl::StrCat("bearer token '", entry->name, "' expired at ",
                       absl::FormatTime(absl::RFC3339_sec, *entry->expires, absl::UTCTimeZone()))));
    }
    credential = true;
    granted = std::max({granted, entry->role, policy_.Granted(SubjectKind::kToken, entry->name)});
  }
  for (const std::string& cn : caller.cert_cns) {
    identities.push_back(absl::StrCat("cert-cn:", cn));
    granted = std::max(granted, policy_.Granted(SubjectKind::kCertCn, cn));
    credential = true;
  }
  for (const std::string& san : caller.cert_sans) {
    identities.push_back(absl::StrCat("cert-san:", san));
    granted = std::max(granted, policy_.Granted(SubjectKind::kCertSan, san));
    credential = true;
  }

  if (granted >= required) return decide(absl::OkStatus());
  if (!credential && granted == Access::kNone) {
    return decide(absl::UnauthenticatedError(absl::StrCat(
        method, " needs ", AccessName(required), " access and ",
        caller.unix_socket ? "Unix-socket callers have none here (policy 'unix none')"
                           : "TCP callers must present a client certificate or a bearer token",
        " that is granted it")));
  }
  return decide(absl::PermissionDeniedError(
      absl::StrCat(identities.empty() ? "caller" : absl::StrJoin(identities, ","), " has ",
                   AccessName(granted), " access; ", method, " needs ", AccessName(required))));
}

}  // namespace cbt::agent
