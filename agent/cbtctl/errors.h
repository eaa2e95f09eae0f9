// Exit codes and the reporting of usage errors and failed calls.
#ifndef CBT_AGENT_CBTCTL_ERRORS_H_
#define CBT_AGENT_CBTCTL_ERRORS_H_

#include <ostream>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "cbtctl/command_line.h"

namespace cbt::cbtctl {

enum ExitCode : int {
  kExitOk = 0,
  kExitRpcError = 1,
  kExitUsage = 2,
  kExitLocalError = 3,   // files: TLS material, --output
  kExitNotServing = 4,   // health: the service is not SERVING
  kExitInterrupted = 130,
};

// "cbtctl: <message>" and a pointer to the help of `invocation`'s command (or group).
std::string FormatUsageError(const absl::Status& error, const Invocation& invocation);

// Trailing metadata key the agent sets to "true" when the CBT generation changed.
inline constexpr char kFullBackupRequiredKey[] = "cbt-full-backup-required";

// "FAILED_PRECONDITION" etc.; the number for codes gRPC does not define.
std::string StatusCodeName(grpc::StatusCode code);

// "cbtctl: <rpc>: <CODE>: <message>\n", plus the full-backup line when `full_backup_required`.
std::string FormatRpcError(const std::string& rpc, const grpc::Status& status,
                           bool full_backup_required);

// Whether the server's trailing metadata says a full backup is required. Only valid after the
// call finished.
bool FullBackupRequired(const grpc::ClientContext& context);

// Prints the error to `err` and returns kExitRpcError.
int ReportRpcError(const std::string& rpc, const grpc::Status& status,
                   const grpc::ClientContext& context, std::ostream& err);

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_ERRORS_H_
