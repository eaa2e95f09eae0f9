#include "api_calls.h"

#include <gtest/gtest.h>

namespace cbt::testing {

v1::AttachTrackerResponse Attach(AgentHarness& h, const std::string& device) {
  v1::AttachTrackerRequest request;
  request.set_device(device);
  v1::AttachTrackerResponse response;
  grpc::Status status = h.agent().AttachTracker(Deadline().get(), request, &response);
  EXPECT_TRUE(status.ok()) << "AttachTracker " << device << ": " << status.error_message();
  return response;
}

grpc::Status TryCreateSnapshot(AgentHarness& h, const std::vector<std::string>& devices,
                               uint64_t limit_bytes, const std::string& storage,
                               v1::CreateSnapshotResponse* response) {
  v1::CreateSnapshotRequest request;
  for (const std::string& d : devices) request.add_devices(d);
  request.mutable_diff_storage()->set_path(storage.empty() ? h.diff_dir() : storage);
  request.mutable_diff_storage()->set_limit_bytes(limit_bytes);
  return TryCreateSnapshot(h, request, response);
}

grpc::Status TryCreateSnapshot(AgentHarness& h, const v1::CreateSnapshotRequest& request,
                               v1::CreateSnapshotResponse* response) {
  v1::CreateSnapshotResponse local;
  return h.agent().CreateSnapshot(Deadline().get(), request, response ? response : &local);
}

v1::Snapshot CreateSnapshot(AgentHarness& h, const std::vector<std::string>& devices,
                            uint64_t limit_bytes, const std::string& storage) {
  v1::CreateSnapshotResponse response;
  grpc::Status status = TryCreateSnapshot(h, devices, limit_bytes, storage, &response);
  EXPECT_TRUE(status.ok()) << "CreateSnapshot: " << status.error_message();
  return response.snapshot();
}

void Release(AgentHarness& h, const std::string& id) {
  v1::ReleaseSnapshotRequest request;
  request.set_snapshot_id(id);
  v1::ReleaseSnapshotResponse response;
  grpc::Status status = h.agent().ReleaseSnapshot(Deadline().get(), request, &response);
  EXPECT_TRUE(status.ok()) << "ReleaseSnapshot " << id << ": " << status.error_message();
}

v1::CbtInfo Info(AgentHarness& h, const std::string& device) {
  v1::GetCbtInfoRequest request;
  request.set_device(device);
  v1::CbtInfo response;
  grpc::Status status = h.agent().GetCbtInfo(Deadline().get(), request, &response);
  EXPECT_TRUE(status.ok()) << "GetCbtInfo " << device << ": " << status.error_message();
  return response;
}

std::vector<uint8_t> ReadMap(AgentHarness& h, const std::string& device) {
  v1::ReadCbtMapRequest request;
  request.set_device(device);
  auto context = Deadline();
  auto reader = h.agent().ReadCbtMap(context.get(), request);
  std::vector<v1::CbtMapChunk> chunks;
  grpc::Status status = ReadAll(reader, &chunks);
  EXPECT_TRUE(status.ok()) << "ReadCbtMap " << device << ": " << status.error_message();
  std::vector<uint8_t> map;
  for (const auto& chunk : chunks) {
    EXPECT_EQ(chunk.offset(), map.size());
    map.insert(map.end(), chunk.data().begin(), chunk.data().end());
    EXPECT_EQ(chunk.total_length(), chunks.empty() ? 0 : chunks[0].total_length());
  }
  return map;
}

ExtentsResult Extents(AgentHarness& h, const std::string& device, const std::string& generation,
                      uint32_t changes, uint64_t start, uint32_t max) {
  v1::GetChangedExtentsRequest request;
  request.set_device(device);
  request.set_base_generation_id(generation);
  request.set_base_changes_number(changes);
  request.set_start_offset(start);
  request.set_max_extents(max);
  auto context = Deadline();
  auto reader = h.agent().GetChangedExtents(context.get(), request);
  std::vector<v1::ChangedExtentsChunk> chunks;
  ExtentsResult result;
  result.status = ReadAll(reader, &chunks);
  for (const auto& chunk : chunks) {
    for (const auto& e : chunk.extents()) result.extents.push_back({e.offset(), e.length()});
  }
  if (!chunks.empty()) result.last = chunks.back();
  auto trailer = context->GetServerTrailingMetadata().find("cbt-full-backup-required");
  if (trailer != context->GetServerTrailingMetadata().end()) {
    result.full_backup_trailer = std::string(trailer->second.data(), trailer->second.size());
  }
  return result;
}

namespace {

template <typename Request, typename Response, typename Method>
grpc::Status Unary(AgentHarness& h, Method method, const Request& request) {
  Response response;
  return (h.agent().*method)(Deadline(10).get(), request, &response);
}

template <typename Message, typename Reader>
grpc::Status Drain(Reader reader) {
  std::vector<Message> messages;
  return ReadAll(reader, &messages);
}

}  // namespace

grpc::Status TryAttach(AgentHarness& h, const std::string& device) {
  v1::AttachTrackerRequest r;
  r.set_device(device);
  return Unary<v1::AttachTrackerRequest, v1::AttachTrackerResponse>(
      h, &v1::CbtAgent::Stub::AttachTracker, r);
}

grpc::Status TryDetach(AgentHarness& h, const std::string& device) {
  v1::DetachTrackerRequest r;
  r.set_device(device);
  return Unary<v1::DetachTrackerRequest, v1::DetachTrackerResponse>(
      h, &v1::CbtAgent::Stub::DetachTracker, r);
}

grpc::Status TryGetTracker(AgentHarness& h, const std::string& device) {
  v1::GetTrackerRequest r;
  r.set_device(device);
  return Unary<v1::GetTrackerRequest, v1::Tracker>(h, &v1::CbtAgent::Stub::GetTracker, r);
}

grpc::Status TryGetCbtInfo(AgentHarness& h, const std::string& device) {
  v1::GetCbtInfoRequest r;
  r.set_device(device);
  return Unary<v1::GetCbtInfoRequest, v1::CbtInfo>(h, &v1::CbtAgent::Stub::GetCbtInfo, r);
}

grpc::Status TryRelease(AgentHarness& h, const std::string& id) {
  v1::ReleaseSnapshotRequest r;
  r.set_snapshot_id(id);
  return Unary<v1::ReleaseSnapshotRequest, v1::ReleaseSnapshotResponse>(
      h, &v1::CbtAgent::Stub::ReleaseSnapshot, r);
}

grpc::Status TryGetSnapshot(AgentHarness& h, const std::string& id) {
  v1::GetSnapshotRequest r;
  r.set_snapshot_id(id);
  return Unary<v1::GetSnapshotRequest, v1::Snapshot>(h, &v1::CbtAgent::Stub::GetSnapshot, r);
}

grpc::Status TryWatch(AgentHarness& h, const std::string& id) {
  v1::WatchSnapshotEventsRequest r;
  r.set_snapshot_id(id);
  auto context = Deadline(10);
  return Drain<v1::SnapshotEvent>(h.agent().WatchSnapshotEvents(context.get(), r));
}

grpc::Status TryReadMap(AgentHarness& h, const std::string& device, uint64_t offset,
                        uint64_t length) {
  v1::ReadCbtMapRequest r;
  r.set_device(device);
  r.set_offset(offset);
  r.set_length(length);
  auto context = Deadline(10);
  return Drain<v1::CbtMapChunk>(h.agent().ReadCbtMap(context.get(), r));
}

grpc::Status TryMarkDirty(AgentHarness& h, const std::string& device,
                          const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  v1::MarkDirtyRequest r;
  r.set_device(device);
  for (auto [offset, length] : ranges) {
    auto* range = r.add_ranges();
    range->set_offset(offset);
    range->set_length(length);
  }
  return Unary<v1::MarkDirtyRequest, v1::MarkDirtyResponse>(h, &v1::CbtAgent::Stub::MarkDirty, r);
}

std::string Pattern(uint64_t length, uint32_t seed) {
  std::string data(length, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (uint64_t i = 0; i < length; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    data[i] = static_cast<char>(x);
  }
  return data;
}

}  // namespace cbt::testing
