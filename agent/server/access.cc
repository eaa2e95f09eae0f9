#include "server/access.h"

#include "absl/strings/str_cat.h"

namespace cbt::agent {

absl::StatusOr<Access> ParseAccess(absl::string_view text, bool allow_none) {
  if (text == "read") return Access::kRead;
  if (text == "write") return Access::kWrite;
  if (allow_none && text == "none") return Access::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is not ", allow_none ? "none, read or write" : "read or write"));
}

const char* AccessName(Access access) {
  switch (access) {
    case Access::kNone:
      return "none";
    case Access::kRead:
      return "read";
    case Access::kWrite:
      return "write";
  }
  return "none";
}

}  // namespace cbt::agent
