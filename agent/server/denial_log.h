// One warning line per refused call (authorization, path allowlists, limits):
//
//   cbt-agent: warning: denied <Method> from <peer> as <caller>: <CODE>: <reason>
//
// Request text (paths) can carry any byte, so control characters and bytes outside printable
// ASCII are written as \xNN: a request cannot forge log lines. A caller can make the agent
// refuse as fast as it can send, so lines are rate-limited (a burst of 100, then 20 per second);
// the next line written says how many were left out.
#ifndef CBT_AGENT_SERVER_DENIAL_LOG_H_
#define CBT_AGENT_SERVER_DENIAL_LOG_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace cbt::agent {

void LogDenial(absl::string_view method, absl::string_view peer, absl::string_view caller,
               const absl::Status& status);

// `text` with control and non-ASCII bytes as \xNN and backslashes doubled.
std::string PrintableForLog(absl::string_view text);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_DENIAL_LOG_H_
