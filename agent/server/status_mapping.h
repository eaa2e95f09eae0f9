// The one place where absl::Status (core, backends) becomes a grpc::Status.
//
// absl and gRPC share code numbers; what this adds is the rule that an expected condition is
// never UNKNOWN (it becomes INTERNAL with its message) and that "full backup required" is
// visible to clients in trailing metadata as well as in the message.
#ifndef CBT_AGENT_SERVER_STATUS_MAPPING_H_
#define CBT_AGENT_SERVER_STATUS_MAPPING_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace cbt::agent {

// Trailing metadata key set to "true" on FAILED_PRECONDITION when the CBT generation changed.
inline constexpr char kFullBackupRequiredMetadata[] = "cbt-full-backup-required";

grpc::Status ToGrpcStatus(const absl::Status& status);

// Same, and adds the full-backup trailer to `context` when it applies.
grpc::Status ToGrpcStatus(const absl::Status& status, grpc::ServerContext* context);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_STATUS_MAPPING_H_
