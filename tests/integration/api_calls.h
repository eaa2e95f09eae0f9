// Short wrappers over the agent's RPCs for tests: each returns the reply and fails the current
// test (EXPECT) when the call does not succeed.
#ifndef CBT_TESTS_INTEGRATION_API_CALLS_H_
#define CBT_TESTS_INTEGRATION_API_CALLS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "agent_harness.h"

namespace cbt::testing {

namespace v1 = ::cbtagent::v1;

v1::AttachTrackerResponse Attach(AgentHarness& h, const std::string& device);
v1::Snapshot CreateSnapshot(AgentHarness& h, const std::vector<std::string>& devices,
                            uint64_t limit_bytes, const std::string& storage = "");
grpc::Status TryCreateSnapshot(AgentHarness& h, const std::vector<std::string>& devices,
                               uint64_t limit_bytes, const std::string& storage,
                               v1::CreateSnapshotResponse* response = nullptr);
grpc::Status TryCreateSnapshot(AgentHarness& h, const v1::CreateSnapshotRequest& request,
                               v1::CreateSnapshotResponse* response = nullptr);
void Release(AgentHarness& h, const std::string& id);

// The same RPCs returning the status instead of expecting success, for error-path tests.
grpc::Status TryAttach(AgentHarness& h, const std::string& device);
grpc::Status TryDetach(AgentHarness& h, const std::string& device);
grpc::Status TryGetTracker(AgentHarness& h, const std::string& device);
grpc::Status TryGetCbtInfo(AgentHarness& h, const std::string& device);
grpc::Status TryRelease(AgentHarness& h, const std::string& id);
grpc::Status TryGetSnapshot(AgentHarness& h, const std::string& id);
// Opens the event stream of `id`; an invalid request ends it at once with its status.
grpc::Status TryWatch(AgentHarness& h, const std::string& id);
grpc::Status TryReadMap(AgentHarness& h, const std::string& device, uint64_t offset,
                        uint64_t length);
grpc::Status TryMarkDirty(AgentHarness& h, const std::string& device,
                          const std::vector<std::pair<uint64_t, uint64_t>>& ranges);
v1::CbtInfo Info(AgentHarness& h, const std::string& device);
std::vector<uint8_t> ReadMap(AgentHarness& h, const std::string& device);

struct ExtentsResult {
  grpc::Status status;
  std::vector<std::pair<uint64_t, uint64_t>> extents;  // (offset, length)
  v1::ChangedExtentsChunk last;
  std::string full_backup_trailer;
};
ExtentsResult Extents(AgentHarness& h, const std::string& device, const std::string& generation,
                      uint32_t changes, uint64_t start = 0, uint32_t max = 0);

// A recognisable payload: `length` bytes derived from `seed`.
std::string Pattern(uint64_t length, uint32_t seed);

}  // namespace cbt::testing

#endif  // CBT_TESTS_INTEGRATION_API_CALLS_H_
