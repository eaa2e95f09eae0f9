#include "server/authz_policy.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/config_file.h"

namespace cbt::agent {

absl::StatusOr<AuthzPolicy> AuthzPolicy::Parse(absl::string_view text, absl::string_view source) {
  AuthzPolicy policy;
  bool unix_seen = false;
  for (const ConfigLine& line : SplitConfigLines(text)) {
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(source, " line ", line.number, ": ", what));
    };
    const std::vector<std::string>& f = line.fields;
    if (f[0] == "unix") {
      if (f.size() != 2) return error("expected 'unix write|read|none'");
      if (unix_seen) return error("a second 'unix' line");
      auto access = ParseAccess(f[1], /*allow_none=*/true);
      if (!access.ok()) return error(absl::StrCat("unix: ", access.status().message()));
      policy.unix_access_ = *access;
      unix_seen = true;
      continue;
    }
    if (f[0] != "grant" || f.size() != 3) {
      return error(
          "expected 'grant read|write cert-cn:NAME|cert-san:NAME|token:NAME' or "
          "'unix write|read|none'");
    }
    auto access = ParseAccess(f[1], /*allow_none=*/false);
    if (!access.ok()) return error(absl::StrCat("grant: ", access.status().message()));
    absl::string_view subject = f[2];
    SubjectKind kind;
    if (absl::ConsumePrefix(&subject, "cert-cn:")) {
      kind = SubjectKind::kCertCn;
    } else if (absl::ConsumePrefix(&subject, "cert-san:")) {
      kind = SubjectKind::kCertSan;
    } else if (absl::ConsumePrefix(&subject, "token:")) {
      kind = SubjectKind::kToken;
    } else {
      return error(absl::StrCat("'", f[2], "' is not cert-cn:NAME, cert-san:NAME or token:NAME"));
    }
    if (subject.empty()) return error(absl::StrCat("'", f[2], "' names nobody"));
    Access& granted = policy.grants_[{kind, std::string(subject)}];
    granted = std::max(granted, *access);
  }
  return policy;
}

absl::StatusOr<AuthzPolicy> AuthzPolicy::Load(const std::string& path) {
  auto text = ReadConfigFile(path, "--authz_policy", FileSecrecy::kPublic);
  if (!text.ok()) return text.status();
  return Parse(*text, absl::StrCat("--authz_policy=", path));
}

Access AuthzPolicy::Granted(SubjectKind kind, const std::string& name) const {
  auto it = grants_.find({kind, name});
  return it == grants_.end() ? Access::kNone : it->second;
}

std::vector<std::string> AuthzPolicy::TokenNames() const {
  std::vector<std::string> names;
  for (const auto& [subject, access] : grants_) {
    if (subject.first == SubjectKind::kToken) names.push_back(subject.second);
  }
  return names;
}

bool AuthzPolicy::HasCertificateGrants() const {
  return std::any_of(grants_.begin(), grants_.end(),
                     [](const auto& grant) { return grant.first.first != SubjectKind::kToken; });
}

}  // namespace cbt::agent
