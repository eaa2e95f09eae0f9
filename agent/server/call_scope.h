// CallScope: what every cbtagent.v1.CbtAgent handler does around its work. It records the
// call's latency and status code in the metrics, and applies the safeguards that stand before
// the backend: who may call the method (authorizer.h), how large a request may be, which paths
// it may name (path_guard.h) and how many streams may run for how long (stream_limiter.h).
// Every refusal is logged once, here (denial_log.h), with method, peer, caller and reason.
#ifndef CBT_AGENT_SERVER_CALL_SCOPE_H_
#define CBT_AGENT_SERVER_CALL_SCOPE_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/message_lite.h"
#include "server/authorizer.h"
#include "server/metrics.h"
#include "server/path_guard.h"
#include "server/stream_limiter.h"

namespace cbt::agent {

// A null member turns its check off. The daemon always sets all three; in-process embeddings
// without a network (bench/grpc_load_bench.cc) may leave them out.
struct Safeguards {
  const Authorizer* authorizer = nullptr;
  const PathGuard* paths = nullptr;
  StreamLimiter* streams = nullptr;
  // --max_receive_message_bytes; 0: no limit. gRPC's transport is set to twice this, so that
  // requests over it reach Admit() and are refused with a log line (agent_main.cc).
  size_t max_request_bytes = 0;
};

class CallScope {
 public:
  CallScope(const Safeguards& guards, Metrics* metrics, grpc::ServerContext* context,
            const char* method, const google::protobuf::MessageLite& request);

  // First thing in every handler: authorization (UNAUTHENTICATED, PERMISSION_DENIED), then the
  // request's size (RESOURCE_EXHAUSTED).
  absl::Status Admit();
  // A device the request names (after ValidatePath). Without a path guard, only `path` is set.
  absl::StatusOr<GuardedDevice> CheckDevice(const std::string& device);
  absl::Status CheckDiffStorage(const std::string& path,
                                const std::vector<GuardedDevice>& snapshot_devices);
  // A stream slot; nullptr (no limits) when there is no limiter.
  absl::StatusOr<std::unique_ptr<StreamLimiter::Ticket>> AdmitStream();
  // True when `ticket` ran past --max_stream_duration.
  static bool Expired(const std::unique_ptr<StreamLimiter::Ticket>& ticket) {
    return ticket != nullptr && ticket->Expired();
  }
  // DEADLINE_EXCEEDED for a stream that ran out of time, logged; `resume` says how to go on.
  absl::Status StreamTimeUp(const std::string& resume);
  // Logs `status` as a refusal of this call and returns it.
  absl::Status Refuse(absl::Status status);

  grpc::Status Done(const absl::Status& status);
  grpc::Status Done(grpc::Status status);

 private:
  const Safeguards& guards_;
  Metrics* metrics_;
  grpc::ServerContext* context_;
  const char* method_;
  const google::protobuf::MessageLite& request_;
  absl::Time start_;
  std::string caller_;  // as Admit() saw it
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_CALL_SCOPE_H_
