// The channel to the agent (unix socket, plaintext TCP or TLS/mTLS) and call deadlines.
#ifndef CBT_AGENT_CBTCTL_CONNECTION_H_
#define CBT_AGENT_CBTCTL_CONNECTION_H_

#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "cbtctl/command_line.h"

namespace cbt::cbtctl {

bool IsUnixAddress(const std::string& address);

// Checks that the connection options fit together (InvalidArgument: a usage error).
absl::Status ValidateConnectionOptions(const GlobalOptions& options);

// Reads the TLS files and makes the channel. Errors reading files: FailedPrecondition.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const GlobalOptions& options);

// --timeout, or the default of 30 s for unary calls; streams get no deadline unless given.
void SetDeadline(grpc::ClientContext* context, const GlobalOptions& options, bool streaming);

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_CONNECTION_H_
