// Per-command arguments checked and turned into request messages. Pure; errors are usage
// errors (InvalidArgument) naming the offending argument.
#ifndef CBT_AGENT_CBTCTL_REQUESTS_H_
#define CBT_AGENT_CBTCTL_REQUESTS_H_

#include <string>

#include "absl/status/statusor.h"
#include "cbtagent/v1/agent.pb.h"
#include "cbtctl/command_line.h"
#include "grpc/health/v1/health.pb.h"

namespace cbt::cbtctl {

namespace v1 = ::cbtagent::v1;

v1::EchoRequest BuildEchoRequest(const Invocation& invocation);
// The DEVICE argument of attach, detach, tracker and cbt info.
absl::StatusOr<std::string> DeviceArgument(const Invocation& invocation);
// The ID argument of snapshot release and snapshot get.
absl::StatusOr<std::string> SnapshotIdArgument(const Invocation& invocation);
absl::StatusOr<v1::CreateSnapshotRequest> BuildCreateSnapshotRequest(
    const Invocation& invocation);
v1::WatchSnapshotEventsRequest BuildWatchRequest(const Invocation& invocation);

struct MapArgs {
  v1::ReadCbtMapRequest request;
  std::string output;  // empty: no file
};
absl::StatusOr<MapArgs> BuildMapArgs(const Invocation& invocation);

absl::StatusOr<v1::MarkDirtyRequest> BuildMarkDirtyRequest(const Invocation& invocation);
absl::StatusOr<v1::GetChangedExtentsRequest> BuildChangedExtentsRequest(
    const Invocation& invocation);
grpc::health::v1::HealthCheckRequest BuildHealthRequest(const Invocation& invocation);

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_REQUESTS_H_
