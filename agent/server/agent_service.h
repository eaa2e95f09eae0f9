// AgentService: the cbtagent.v1.CbtAgent gRPC service over a Backend.
//
// Each handler first authorizes the caller, then validates the request (request_validation.h)
// and checks the paths it names against the allowlists (both through call_scope.h), calls the
// backend, converts plain structs to API messages, maps errors in one place (status_mapping.h)
// and records per-RPC metrics. Streams take a slot from the stream limiter and end at its time
// limit.
#ifndef CBT_AGENT_SERVER_AGENT_SERVICE_H_
#define CBT_AGENT_SERVER_AGENT_SERVICE_H_

#include <string>

#include "backend/backend.h"
#include "cbtagent/v1/agent.grpc.pb.h"
#include "server/call_scope.h"
#include "server/event_hub.h"
#include "server/metrics.h"

namespace cbt::agent {

struct NodeFacts {
  std::string agent_version;
  std::string kernel_release;
  // Why no backend could be used, when `backend` is a stand-in that fails every call.
  std::string backend_unavailable_reason;
};

class AgentService final : public cbtagent::v1::CbtAgent::Service {
 public:
  // Size of ReadCbtMap chunks, and of extent batches in GetChangedExtents messages.
  static constexpr uint64_t kMapChunkBytes = 256 * 1024;
  static constexpr size_t kExtentsPerMessage = 4096;

  // `safeguards` (call_scope.h): the daemon passes all of them; left empty, every caller may
  // call everything with any path, which is only right in process (benchmarks).
  AgentService(Backend* backend, EventHub* events, Metrics* metrics, NodeFacts facts,
               Safeguards safeguards = {});

  using Ctx = grpc::ServerContext;
  grpc::Status GetCapabilities(Ctx*, const cbtagent::v1::GetCapabilitiesRequest*,
                               cbtagent::v1::Capabilities*) override;
  grpc::Status Echo(Ctx*, const cbtagent::v1::EchoRequest*, cbtagent::v1::EchoResponse*) override;
  grpc::Status AttachTracker(Ctx*, const cbtagent::v1::AttachTrackerRequest*,
                             cbtagent::v1::AttachTrackerResponse*) override;
  grpc::Status DetachTracker(Ctx*, const cbtagent::v1::DetachTrackerRequest*,
                             cbtagent::v1::DetachTrackerResponse*) override;
  grpc::Status GetTracker(Ctx*, const cbtagent::v1::GetTrackerRequest*,
                          cbtagent::v1::Tracker*) override;
  grpc::Status ListTrackers(Ctx*, const cbtagent::v1::ListTrackersRequest*,
                            cbtagent::v1::ListTrackersResponse*) override;
  grpc::Status CreateSnapshot(Ctx*, const cbtagent::v1::CreateSnapshotRequest*,
                              cbtagent::v1::CreateSnapshotResponse*) override;
  grpc::Status ReleaseSnapshot(Ctx*, const cbtagent::v1::ReleaseSnapshotRequest*,
                               cbtagent::v1::ReleaseSnapshotResponse*) override;
  grpc::Status GetSnapshot(Ctx*, const cbtagent::v1::GetSnapshotRequest*,
                           cbtagent::v1::Snapshot*) override;
  grpc::Status ListSnapshots(Ctx*, const cbtagent::v1::ListSnapshotsRequest*,
                             cbtagent::v1::ListSnapshotsResponse*) override;
  grpc::Status WatchSnapshotEvents(Ctx*, const cbtagent::v1::WatchSnapshotEventsRequest*,
                                   grpc::ServerWriter<cbtagent::v1::SnapshotEvent>*) override;
  grpc::Status GetCbtInfo(Ctx*, const cbtagent::v1::GetCbtInfoRequest*,
                          cbtagent::v1::CbtInfo*) override;
  grpc::Status ReadCbtMap(Ctx*, const cbtagent::v1::ReadCbtMapRequest*,
                          grpc::ServerWriter<cbtagent::v1::CbtMapChunk>*) override;
  grpc::Status MarkDirty(Ctx*, const cbtagent::v1::MarkDirtyRequest*,
                         cbtagent::v1::MarkDirtyResponse*) override;
  grpc::Status GetChangedExtents(Ctx*, const cbtagent::v1::GetChangedExtentsRequest*,
                                 grpc::ServerWriter<cbtagent::v1::ChangedExtentsChunk>*) override;

 private:
  Backend* backend_;
  EventHub* events_;
  Metrics* metrics_;
  const NodeFacts facts_;
  const Safeguards safeguards_;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_AGENT_SERVICE_H_
