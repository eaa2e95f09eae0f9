// What a caller may do with the API: nothing, read-only methods, or every method.
#ifndef CBT_AGENT_SERVER_ACCESS_H_
#define CBT_AGENT_SERVER_ACCESS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cbt::agent {

// Ordered: kWrite implies kRead, so the larger of two grants is std::max.
enum class Access : uint8_t { kNone = 0, kRead = 1, kWrite = 2 };

// "read" or "write" (config files); "none" only where `allow_none`.
absl::StatusOr<Access> ParseAccess(absl::string_view text, bool allow_none);
const char* AccessName(Access access);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_ACCESS_H_
