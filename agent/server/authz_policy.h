// The authorization policy (--authz_policy): which identities get read or write access.
//
// One directive per line; '#' starts a comment (at the start of a line or after a blank):
//
//   grant read|write cert-cn:NAME    client certificate whose subject CN is NAME (mTLS)
//   grant read|write cert-san:NAME   client certificate with NAME as a DNS or URI SAN (mTLS)
//   grant read|write token:NAME      the bearer token named NAME in --auth_tokens_file
//   unix write|read|none             callers on the Unix sockets (default: write)
//
// "write" implies "read". A caller's access is the highest grant of any of its identities (a
// bearer token's own role in --auth_tokens_file counts as a grant). Everything not granted is
// denied; on TCP there is nothing without a grant. Unix-socket callers are trusted by the
// socket's file mode and group (--socket_mode, --socket_group) and get write access unless a
// `unix` line says otherwise. The file must not be writable by its group or others.
#ifndef CBT_AGENT_SERVER_AUTHZ_POLICY_H_
#define CBT_AGENT_SERVER_AUTHZ_POLICY_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/access.h"

namespace cbt::agent {

enum class SubjectKind { kCertCn, kCertSan, kToken };

class AuthzPolicy {
 public:
  AuthzPolicy() = default;  // no grants; Unix callers: write
  // `source` names the file in error messages.
  static absl::StatusOr<AuthzPolicy> Parse(absl::string_view text, absl::string_view source);
  static absl::StatusOr<AuthzPolicy> Load(const std::string& path);

  // kNone unless granted.
  Access Granted(SubjectKind kind, const std::string& name) const;
  Access unix_access() const { return unix_access_; }
  // Token names the policy grants to (to check them against --auth_tokens_file).
  std::vector<std::string> TokenNames() const;
  bool HasCertificateGrants() const;
  size_t grant_count() const { return grants_.size(); }

 private:
  std::map<std::pair<SubjectKind, std::string>, Access> grants_;
  Access unix_access_ = Access::kWrite;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_AUTHZ_POLICY_H_
