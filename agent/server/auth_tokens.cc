#include "server/auth_tokens.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/config_file.h"

namespace cbt::agent {
namespace {

constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 512;

bool IsNameSyntax(absl::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Equal length and content, touching every byte whatever the content.
bool SameSecret(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return difference == 0;
}

}  // namespace

bool IsBearerTokenSyntax(absl::string_view token) {
  size_t end = token.size();
  while (end > 0 && token[end - 1] == '=') --end;
  if (end == 0) return false;
  for (size_t i = 0; i < end; ++i) {
    const char c = token[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<TokenStore> TokenStore::Parse(absl::string_view text, absl::string_view source) {
  TokenStore store;
  for (const ConfigLine& line : SplitConfigLines(text)) {
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(source, " line ", line.number, ": ", what));
    };
    if (line.fields.size() < 3 || line.fields.size() > 4) {
      return error("expected '<token> <name> <read|write> [expires=<RFC 3339 time>]'");
    }
    TokenEntry entry;
    entry.token = line.fields[0];
    entry.name = line.fields[1];
    if (entry.token.size() < kMinTokenLength || entry.token.size() > kMaxTokenLength ||
        !IsBearerTokenSyntax(entry.token)) {
      return error(absl::StrCat("the token of '", entry.name, "' must be ", kMinTokenLength, " to ",
                                kMaxTokenLength,
                                " characters of A-Z a-z 0-9 - . _ ~ + / (e.g. openssl rand -hex "
                                "32)"));
    }
    if (!IsNameSyntax(entry.name)) {
      return error(
          absl::StrCat("name '", entry.name, "' must be 1 to 128 of A-Z a-z 0-9 . _ : @ -"));
    }
    auto role = ParseAccess(line.fields[2], /*allow_none=*/false);
    if (!role.ok()) return error(absl::StrCat("role ", role.status().message()));
    entry.role = *role;
    if (line.fields.size() == 4) {
      absl::string_view expires = line.fields[3];
      absl::Time when;
      std::string parse_error;
      if (!absl::ConsumePrefix(&expires, "expires=") ||
          !absl::ParseTime(absl::RFC3339_full, expires, &when, &parse_error)) {
        return error(absl::StrCat("'", line.fields[3],
                                  "' is not expires=<RFC 3339 time, e.g. 2030-01-31T00:00:00Z>"));
      }
      entry.expires = when;
    }
    for (const TokenEntry& other : store.entries_) {
      if (other.name == entry.name) return error(absl::StrCat("name '", entry.name, "' repeats"));
      if (SameSecret(other.token, entry.token)) {
        return error(absl::StrCat("'", entry.name, "' has the same token as '", other.name, "'"));
      }
    }
    store.entries_.push_back(std::move(entry));
  }
  return store;
}

absl::StatusOr<TokenStore> TokenStore::Load(const std::string& path) {
  auto text = ReadConfigFile(path, "--auth_tokens_file", FileSecrecy::kSecret);
  if (!text.ok()) return text.status();
  return Parse(*text, absl::StrCat("--auth_tokens_file=", path));
}

const TokenEntry* TokenStore::Find(absl::string_view token) const {
  const TokenEntry* found = nullptr;
  for (const TokenEntry& entry : entries_) {
    if (SameSecret(entry.token, token)) found = &entry;
  }
  return found;
}

bool TokenStore::HasName(absl::string_view name) const {
  for (const TokenEntry& entry : entries_) {
    if (entry.name == name) return true;
  }
  return false;
}

}  // namespace cbt::agent
