#include "secure_client.h"

#include <chrono>

namespace cbt::testing {

std::unique_ptr<grpc::ClientContext> Caller::Context(int seconds) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  for (const auto& [key, value] : metadata_) context->AddMetadata(key, value);
  return context;
}

grpc::Status Caller::Echo(const std::string& payload) {
  v1::EchoRequest request;
  request.set_payload(payload);
  v1::EchoResponse response;
  return stub_->Echo(Context(30).get(), request, &response);
}

grpc::Status Caller::ListTrackers() {
  v1::ListTrackersResponse response;
  return stub_->ListTrackers(Context().get(), {}, &response);
}

grpc::Status Caller::Attach(const std::string& device) {
  v1::AttachTrackerRequest request;
  request.set_device(device);
  v1::AttachTrackerResponse response;
  return stub_->AttachTracker(Context().get(), request, &response);
}

grpc::Status Caller::Detach(const std::string& device) {
  v1::DetachTrackerRequest request;
  request.set_device(device);
  v1::DetachTrackerResponse response;
  return stub_->DetachTracker(Context().get(), request, &response);
}

grpc::Status Caller::GetCbtInfo(const std::string& device) {
  v1::GetCbtInfoRequest request;
  request.set_device(device);
  v1::CbtInfo response;
  return stub_->GetCbtInfo(Context().get(), request, &response);
}

grpc::Status Caller::ReadMap(const std::string& device) {
  v1::ReadCbtMapRequest request;
  request.set_device(device);
  auto context = Context();
  auto reader = stub_->ReadCbtMap(context.get(), request);
  v1::CbtMapChunk chunk;
  while (reader->Read(&chunk)) {
  }
  return reader->Finish();
}

grpc::Status Caller::Extents(const std::string& device, const std::string& generation) {
  v1::GetChangedExtentsRequest request;
  request.set_device(device);
  request.set_base_generation_id(generation);
  auto context = Context();
  auto reader = stub_->GetChangedExtents(context.get(), request);
  v1::ChangedExtentsChunk chunk;
  while (reader->Read(&chunk)) {
  }
  return reader->Finish();
}

grpc::Status Caller::MarkDirty(const std::string& device, int count) {
  v1::MarkDirtyRequest request;
  request.set_device(device);
  for (int i = 0; i < count; ++i) request.add_ranges()->set_length(512);
  v1::MarkDirtyResponse response;
  return stub_->MarkDirty(Context(30).get(), request, &response);
}

grpc::Status Caller::Create(const std::vector<std::string>& devices,
                            const std::string& diff_storage, std::string* id) {
  v1::CreateSnapshotRequest request;
  for (const std::string& device : devices) request.add_devices(device);
  request.mutable_diff_storage()->set_path(diff_storage);
  request.mutable_diff_storage()->set_limit_bytes(64 * 1024 * 1024);
  v1::CreateSnapshotResponse response;
  grpc::Status status = stub_->CreateSnapshot(Context(30).get(), request, &response);
  if (id != nullptr) *id = response.snapshot().id();
  return status;
}

grpc::Status Caller::Release(const std::string& id) {
  v1::ReleaseSnapshotRequest request;
  request.set_snapshot_id(id);
  v1::ReleaseSnapshotResponse response;
  return stub_->ReleaseSnapshot(Context().get(), request, &response);
}

}  // namespace cbt::testing
