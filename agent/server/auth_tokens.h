// Bearer tokens (--auth_tokens_file): which caller a token stands for and what it may do.
//
// One token per line; '#' starts a comment (at the start of a line or after a blank):
//
//   <token> <name> <role> [expires=<RFC 3339 time>]
//
//   token  16 to 512 characters of RFC 6750's b64token alphabet (A-Z a-z 0-9 - . _ ~ + /,
//          then optionally '='), e.g. from `openssl rand -hex 32`; unique
//   name   who the token belongs to, [A-Za-z0-9._:@-]+, unique; shown in logs (the token never
//          is) and usable in policy lines as token:NAME
//   role   read (read-only methods) or write (every method; write implies read)
//   expires  optional; from then on the token is refused with UNAUTHENTICATED
//
// The file holds secrets: it must not be readable by others (config_file.h). Clients send
// "authorization: Bearer <token>" metadata. Lookups compare against every token in constant
// time per token, so response times do not tell how much of a guess was right.
#ifndef CBT_AGENT_SERVER_AUTH_TOKENS_H_
#define CBT_AGENT_SERVER_AUTH_TOKENS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/access.h"

namespace cbt::agent {

struct TokenEntry {
  std::string token;
  std::string name;
  Access role = Access::kRead;
  std::optional<absl::Time> expires;
};

class TokenStore {
 public:
  TokenStore() = default;  // no tokens
  // `source` names the file in error messages ("--auth_tokens_file=/etc/...").
  static absl::StatusOr<TokenStore> Parse(absl::string_view text, absl::string_view source);
  // Reads the file (refusing one that others may read) and parses it.
  static absl::StatusOr<TokenStore> Load(const std::string& path);

  // The entry whose token equals `token`, or nullptr.
  const TokenEntry* Find(absl::string_view token) const;
  bool HasName(absl::string_view name) const;
  size_t size() const { return entries_.size(); }

 private:
  std::vector<TokenEntry> entries_;
};

// True for characters of RFC 6750's b64token ("=" only as trailing padding).
bool IsBearerTokenSyntax(absl::string_view token);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_AUTH_TOKENS_H_
