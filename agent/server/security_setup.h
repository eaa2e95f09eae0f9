// Builds the daemon's safeguards (call_scope.h) from its options: the authorizer from
// --authz_policy and --auth_tokens_file, the path guard from --device_allow and
// --diff_storage_allow, and the stream limiter. Fails (and the daemon refuses to start) on
// anything wrong in them: unreadable or too openly readable/writable files, syntax errors, a
// policy naming a token the tokens file lacks, a missing allowlisted directory, a method of the
// API without an access class. Logs what it set up and warns about settings that cannot work
// as the operator probably meant.
#ifndef CBT_AGENT_SERVER_SECURITY_SETUP_H_
#define CBT_AGENT_SERVER_SECURITY_SETUP_H_

#include <memory>

#include "absl/status/statusor.h"
#include "blksnap/kernel.h"
#include "server/agent_options.h"
#include "server/authorizer.h"
#include "server/call_scope.h"
#include "server/path_guard.h"
#include "server/stream_limiter.h"

namespace cbt::agent {

struct SecuritySetup {
  std::unique_ptr<Authorizer> authorizer;
  // The file system the path guard resolves through: the one the backend sees.
  std::unique_ptr<blksnap::Kernel> file_system;
  std::unique_ptr<PathGuard> paths;
  std::unique_ptr<StreamLimiter> streams;

  size_t max_request_bytes = 0;

  Safeguards safeguards() const {
    return {authorizer.get(), paths.get(), streams.get(), max_request_bytes};
  }
};

// The diff-storage allowlist when --diff_storage_allow is not given: <state_dir>/diff (created
// with mode 0700 when missing).
std::string DefaultDiffStorageDir(const AgentOptions& options);

absl::StatusOr<SecuritySetup> SetUpSecurity(const AgentOptions& options);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_SECURITY_SETUP_H_
