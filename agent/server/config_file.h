// Reading the agent's security configuration files (--auth_tokens_file, --authz_policy).
//
// The file is opened once and checked through that descriptor (no window between the check and
// the read): it must be a regular file of at most 1 MiB, and must not be writable by its group
// or by others, since whoever can write it can grant themselves access. A file holding secrets
// must in addition not be readable by others.
#ifndef CBT_AGENT_SERVER_CONFIG_FILE_H_
#define CBT_AGENT_SERVER_CONFIG_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cbt::agent {

enum class FileSecrecy { kPublic, kSecret };

// The contents, or InvalidArgument naming `flag` and the path.
absl::StatusOr<std::string> ReadConfigFile(const std::string& path, const char* flag,
                                           FileSecrecy secrecy);

// One meaningful line of a config file: its number (from 1) and whitespace-separated fields.
// A '#' at the start of a line or after a blank begins a comment; lines left empty are left
// out.
struct ConfigLine {
  int number = 0;
  std::vector<std::string> fields;
};
std::vector<ConfigLine> SplitConfigLines(absl::string_view text);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_CONFIG_FILE_H_
