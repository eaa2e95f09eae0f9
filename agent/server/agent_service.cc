#include "server/agent_service.h"

#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/changed_extents.h"
#include "server/call_scope.h"
#include "server/request_validation.h"
#include "server/status_mapping.h"

namespace cbt::agent {
namespace v1 = ::cbtagent::v1;
namespace {

void ToProto(const TrackerState& in, v1::Tracker* out) {
  out->set_device(in.device);
  out->set_resolved_path(in.resolved_path);
  out->set_major(in.number.major);
  out->set_minor(in.number.minor);
  out->set_capacity_bytes(in.capacity_bytes);
  out->set_io_path(in.io_path);
  out->set_snapshot_id(in.snapshot_id);
  out->set_image_path(in.image_path);
}

void ToProto(const SnapshotState& in, v1::Snapshot* out) {
  out->set_id(in.id.ToString());
  for (const SnapshotDeviceState& d : in.devices) {
    v1::SnapshotDevice* device = out->add_devices();
    device->set_device(d.device);
    device->set_resolved_path(d.resolved_path);
    device->set_major(d.number.major);
    device->set_minor(d.number.minor);
    device->set_image_path(d.image_path);
    device->set_error_code(d.error_code);
    if (d.error_code != 0) device->set_error(std::strerror(-d.error_code));
  }
  if (!in.diff_storage.path.empty()) {
    out->mutable_diff_storage()->set_path(in.diff_storage.path);
    out->mutable_diff_storage()->set_limit_bytes(in.diff_storage.limit_bytes);
  }
  out->set_state(in.corrupted ? v1::SNAPSHOT_STATE_CORRUPTED : v1::SNAPSHOT_STATE_ACTIVE);
  out->set_created_unix_nanos(in.created_unix_nanos);
  out->set_known_to_agent(in.known_to_agent);
  out->set_diff_storage_used_bytes(in.diff_storage_used_bytes);
}

void ToProto(const SnapshotEvent& in, v1::SnapshotEvent* out) {
  out->set_snapshot_id(in.snapshot_id.ToString());
  out->set_time_unix_nanos(in.time_unix_nanos);
  switch (in.kind) {
    case SnapshotEvent::Kind::kCorrupted: {
      auto* corrupted = out->mutable_corrupted();
      corrupted->set_device(in.device);
      corrupted->set_major(in.number.major);
      corrupted->set_minor(in.number.minor);
      corrupted->set_errno_value(in.errno_value);
      corrupted->set_error(std::strerror(in.errno_value));
      break;
    }
    case SnapshotEvent::Kind::kNoSpace:
      out->mutable_no_space()->set_requested_bytes(in.requested_bytes);
      break;
    case SnapshotEvent::Kind::kReleased:
      out->mutable_released();
      break;
  }
}

void ToProto(const std::string& device, const CbtInfo& in, v1::CbtInfo* out) {
  out->set_device(device);
  out->set_capacity_bytes(in.capacity_bytes);
  out->set_block_size(in.block_size);
  out->set_block_count(in.block_count);
  out->set_generation_id(in.generation_id.ToString());
  out->set_changes_number(in.changes_number);
}

// Tracking geometry as the map reader needs it, from CbtInfo.
TrackingGeometry GeometryOf(const CbtInfo& info) {
  TrackingGeometry geometry;
  geometry.capacity_sectors = info.capacity_bytes >> kSectorShift;
  geometry.block_shift = static_cast<uint32_t>(__builtin_ctz(info.block_size));
  geometry.block_count = info.block_count;
  return geometry;
}

// Reads the whole read map of `device` with a CbtInfo taken before and after, retrying when a
// snapshot was taken in between, so that map and numbers belong together.
absl::Status ReadConsistentMap(Backend& backend, const std::string& device, CbtInfo* info,
                               std::vector<uint8_t>* map) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto before = backend.GetCbtInfo(device);
    if (!before.ok()) return before.status();
    if (before->block_size == 0 || (before->block_size & (before->block_size - 1)) != 0) {
      return absl::InternalError(absl::StrCat("backend reported a block size of ",
                                              before->block_size, " for ", device));
    }
    map->resize(before->block_count);
    if (absl::Status status = backend.ReadCbtMap(device, 0, map->size(), map->data());
        !status.ok()) {
      return status;
    }
    auto after = backend.GetCbtInfo(device);
    if (!after.ok()) return after.status();
    if (after->generation_id == before->generation_id &&
        after->changes_number == before->changes_number &&
        after->block_count == before->block_count) {
      *info = *after;
      return absl::OkStatus();
    }
  }
  return absl::AbortedError(absl::StrCat("snapshots of ", device,
                                         " kept being taken while its CBT map was read; retry"));
}

}  // namespace

AgentService::AgentService(Backend* backend, EventHub* events, Metrics* metrics, NodeFacts facts,
                           Safeguards safeguards)
    : backend_(backend),
      events_(events),
      metrics_(metrics),
      facts_(std::move(facts)),
      safeguards_(safeguards) {}

grpc::Status AgentService::GetCapabilities(Ctx* context, const v1::GetCapabilitiesRequest* request,
                                           v1::Capabilities* response) {
  CallScope scope(safeguards_, metrics_, context, "GetCapabilities", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  response->set_agent_version(facts_.agent_version);
  response->set_kernel_release(facts_.kernel_release);
  if (!facts_.backend_unavailable_reason.empty()) {
    response->set_backend(v1::BACKEND_KIND_UNSPECIFIED);
    response->set_backend_reason(facts_.backend_unavailable_reason);
    return scope.Done(grpc::Status::OK);
  }
  const BackendDescription d = backend_->Describe();
  response->set_backend_reason(d.reason);
  if (d.kind == BackendKind::kBlksnap) {
    response->set_backend(v1::BACKEND_KIND_BLKSNAP);
    auto* blksnap = response->mutable_blksnap();
    if (d.blksnap_flavour == "lk6.15") blksnap->set_flavour(v1::BLKSNAP_FLAVOUR_LK615);
    if (d.blksnap_flavour == "v7") blksnap->set_flavour(v1::BLKSNAP_FLAVOUR_V7);
    if (d.blksnap_flavour == "val7") blksnap->set_flavour(v1::BLKSNAP_FLAVOUR_VAL7);
    blksnap->set_module_version(d.module_version);
    blksnap->set_control_device(d.control_device);
  } else {
    response->set_backend(v1::BACKEND_KIND_UBLK);
    auto* ublk = response->mutable_ublk();
    ublk->set_features(d.ublk_features);
    ublk->set_user_recovery(d.user_recovery);
    ublk->set_ioctl_encoded_commands(d.ioctl_encoded_commands);
    ublk->set_chunk_size_bytes(d.chunk_size_bytes);
  }
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::Echo(Ctx* context, const v1::EchoRequest* request,
                                v1::EchoResponse* response) {
  CallScope scope(safeguards_, metrics_, context, "Echo", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  response->set_payload(request->payload());
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::AttachTracker(Ctx* context, const v1::AttachTrackerRequest* request,
                                         v1::AttachTrackerResponse* response) {
  CallScope scope(safeguards_, metrics_, context, "AttachTracker", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  if (absl::Status s = ValidatePath(request->device(), "device"); !s.ok()) return scope.Done(s);
  if (auto d = scope.CheckDevice(request->device()); !d.ok()) return scope.Done(d.status());
  bool already = false;
  auto tracker = backend_->AttachTracker(request->device(), &already);
  if (!tracker.ok()) return scope.Done(tracker.status());
  ToProto(*tracker, response->mutable_tracker());
  response->set_already_attached(already);
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::DetachTracker(Ctx* context, const v1::DetachTrackerRequest* request,
                                         v1::DetachTrackerResponse*) {
  CallScope scope(safeguards_, metrics_, context, "DetachTracker", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  if (absl::Status s = ValidatePath(request->device(), "device"); !s.ok()) return scope.Done(s);
  // A tracked device that vanished (unplugged, removed) no longer resolves; the backend still
  // knows it by the path it was attached with, and detaching it touches nothing at that path.
  if (auto d = scope.CheckDevice(request->device());
      !d.ok() && !absl::IsNotFound(d.status())) {
    return scope.Done(d.status());
  }
  return scope.Done(backend_->DetachTracker(request->device()));
}

grpc::Status AgentService::GetTracker(Ctx* context, const v1::GetTrackerRequest* request,
                                      v1::Tracker* response) {
  CallScope scope(safeguards_, metrics_, context, "GetTracker", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  if (absl::Status s = ValidatePath(request->device(), "device"); !s.ok()) return scope.Done(s);
  if (auto d = scope.CheckDevice(request->device()); !d.ok()) return scope.Done(d.status());
  auto tracker = backend_->GetTracker(request->device());
  if (!tracker.ok()) return scope.Done(tracker.status());
  ToProto(*tracker, response);
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::ListTrackers(Ctx* context, const v1::ListTrackersRequest* request,
                                        v1::ListTrackersResponse* response) {
  CallScope scope(safeguards_, metrics_, context, "ListTrackers", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  auto trackers = backend_->ListTrackers();
  if (!trackers.ok()) return scope.Done(trackers.status());
  for (const TrackerState& t : *trackers) ToProto(t, response->add_trackers());
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::CreateSnapshot(Ctx* context, const v1::CreateSnapshotRequest* request,
                                          v1::CreateSnapshotResponse* response) {
  CallScope scope(safeguards_, metrics_, context, "CreateSnapshot", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  if (absl::Status s = ValidateCreateSnapshot(*request); !s.ok()) return scope.Done(s);
  std::vector<GuardedDevice> guarded;
  for (const std::string& device : request->devices()) {
    auto checked = scope.CheckDevice(device);
    if (!checked.ok()) return scope.Done(checked.status());
    guarded.push_back(*std::move(checked));
  }
  if (absl::Status s = scope.CheckDiffStorage(request->diff_storage().path(), guarded); !s.ok()) {
    return scope.Done(s);
  }
  std::vector<std::string> devices(request->devices().begin(), request->devices().end());
  DiffStorageSpec storage{request->diff_storage().path(), request->diff_storage().limit_bytes()};
  auto snapshot = backend_->CreateSnapshot(devices, storage);
  if (!snapshot.ok()) return scope.Done(snapshot.status());
  ToProto(*snapshot, response->mutable_snapshot());
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::ReleaseSnapshot(Ctx* context,
                                           const v1::ReleaseSnapshotRequest* request,
                                           v1::ReleaseSnapshotResponse*) {
  CallScope scope(safeguards_, metrics_, context, "ReleaseSnapshot", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  auto id = ParseSnapshotId(request->snapshot_id());
  if (!id.ok()) return scope.Done(id.status());
  return scope.Done(backend_->ReleaseSnapshot(*id));
}

grpc::Status AgentService::GetSnapshot(Ctx* context, const v1::GetSnapshotRequest* request,
                                       v1::Snapshot* response) {
  CallScope scope(safeguards_, metrics_, context, "GetSnapshot", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  auto id = ParseSnapshotId(request->snapshot_id());
  if (!id.ok()) return scope.Done(id.status());
  auto snapshot = backend_->GetSnapshot(*id);
  if (!snapshot.ok()) return scope.Done(snapshot.status());
  ToProto(*snapshot, response);
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::ListSnapshots(Ctx* context, const v1::ListSnapshotsRequest* request,
                                         v1::ListSnapshotsResponse* response) {
  CallScope scope(safeguards_, metrics_, context, "ListSnapshots", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  auto snapshots = backend_->ListSnapshots();
  if (!snapshots.ok()) return scope.Done(snapshots.status());
  for (const SnapshotState& s : *snapshots) ToProto(s, response->add_snapshots());
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::WatchSnapshotEvents(Ctx* context,
                                               const v1::WatchSnapshotEventsRequest* request,
                                               grpc::ServerWriter<v1::SnapshotEvent>* writer) {
  CallScope scope(safeguards_, metrics_, context, "WatchSnapshotEvents", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  std::optional<Uuid> filter;
  if (!request->snapshot_id().empty()) {
    auto id = ParseSnapshotId(request->snapshot_id());
    if (!id.ok()) return scope.Done(id.status());
    if (auto snapshot = backend_->GetSnapshot(*id); !snapshot.ok()) {
      return scope.Done(snapshot.status());
    }
    filter = *id;
  }
  auto ticket = scope.AdmitStream();
  if (!ticket.ok()) return scope.Done(ticket.status());
  auto subscription = events_->Subscribe(filter);
  // Tells the client that it is subscribed: every event from now on reaches it.
  writer->SendInitialMetadata();
  grpc::Status result = grpc::Status::OK;
  while (!context->IsCancelled()) {
    if (CallScope::Expired(*ticket)) {
      result = ToGrpcStatus(scope.StreamTimeUp("resubscribe to go on watching"));
      break;
    }
    auto event = subscription->Next(absl::Milliseconds(200));
    if (event) {
      v1::SnapshotEvent message;
      ToProto(*event, &message);
      if (!writer->Write(message)) break;
      continue;
    }
    if (subscription->closed()) {
      if (subscription->overflowed()) {
        result = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              "this watcher fell more than 1024 events behind; resubscribe");
      }
      break;
    }
  }
  events_->Unsubscribe(subscription);
  return scope.Done(result);
}

grpc::Status AgentService::GetCbtInfo(Ctx* context, const v1::GetCbtInfoRequest* request,
                                      v1::CbtInfo* response) {
  CallScope scope(safeguards_, metrics_, context, "GetCbtInfo", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  if (absl::Status s = ValidatePath(request->device(), "device"); !s.ok()) return scope.Done(s);
  if (auto d = scope.CheckDevice(request->device()); !d.ok()) return scope.Done(d.status());
  auto info = backend_->GetCbtInfo(request->device());
  if (!info.ok()) return scope.Done(info.status());
  ToProto(request->device(), *info, response);
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::ReadCbtMap(Ctx* context, const v1::ReadCbtMapRequest* request,
                                      grpc::ServerWriter<v1::CbtMapChunk>* writer) {
  CallScope scope(safeguards_, metrics_, context, "ReadCbtMap", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  if (absl::Status s = ValidatePath(request->device(), "device"); !s.ok()) return scope.Done(s);
  if (auto d = scope.CheckDevice(request->device()); !d.ok()) return scope.Done(d.status());
  auto info = backend_->GetCbtInfo(request->device());
  if (!info.ok()) return scope.Done(info.status());
  auto range = ResolveMapRange(request->offset(), request->length(), info->block_count);
  if (!range.ok()) return scope.Done(range.status());
  auto ticket = scope.AdmitStream();
  if (!ticket.ok()) return scope.Done(ticket.status());
  v1::CbtMapChunk chunk;
  chunk.set_total_length(range->length);
  uint64_t done = 0;
  do {
    if (CallScope::Expired(*ticket)) {
      return scope.Done(
          scope.StreamTimeUp(absl::StrCat("resume with offset=", range->offset + done)));
    }
    const uint64_t n = std::min<uint64_t>(kMapChunkBytes, range->length - done);
    std::string* data = chunk.mutable_data();
    data->resize(n);
    if (absl::Status s = backend_->ReadCbtMap(request->device(), range->offset + done, n,
                                              reinterpret_cast<uint8_t*>(data->data()));
        !s.ok()) {
      return scope.Done(s);
    }
    chunk.set_offset(range->offset + done);
    if (context->IsCancelled() || !writer->Write(chunk)) {
      return scope.Done(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    }
    done += n;
  } while (done < range->length);
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::MarkDirty(Ctx* context, const v1::MarkDirtyRequest* request,
                                     v1::MarkDirtyResponse* response) {
  CallScope scope(safeguards_, metrics_, context, "MarkDirty", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  if (absl::Status s = ValidatePath(request->device(), "device"); !s.ok()) return scope.Done(s);
  // Refused before anything is resolved or read, and logged: a limit, not a typo.
  if (absl::Status s = CheckDirtyRangeCount(request->ranges_size()); !s.ok()) {
    return scope.Done(scope.Refuse(s));
  }
  if (auto d = scope.CheckDevice(request->device()); !d.ok()) return scope.Done(d.status());
  auto info = backend_->GetCbtInfo(request->device());
  if (!info.ok()) return scope.Done(info.status());
  uint64_t marked = 0;
  auto ranges = ToSectorRanges(request->ranges(), info->capacity_bytes, &marked);
  if (!ranges.ok()) return scope.Done(ranges.status());
  if (absl::Status s = backend_->MarkDirty(request->device(), *ranges); !s.ok()) {
    return scope.Done(s);
  }
  response->set_marked_bytes(marked);
  return scope.Done(grpc::Status::OK);
}

grpc::Status AgentService::GetChangedExtents(
    Ctx* context, const v1::GetChangedExtentsRequest* request,
    grpc::ServerWriter<v1::ChangedExtentsChunk>* writer) {
  CallScope scope(safeguards_, metrics_, context, "GetChangedExtents", *request);
  if (absl::Status s = scope.Admit(); !s.ok()) return scope.Done(s);
  if (absl::Status s = ValidatePath(request->device(), "device"); !s.ok()) return scope.Done(s);
  if (auto d = scope.CheckDevice(request->device()); !d.ok()) return scope.Done(d.status());
  auto base_generation = ParseUuid(request->base_generation_id());
  if (!base_generation.ok()) {
    return scope.Done(absl::InvalidArgumentError(
        absl::StrCat("base_generation_id: ", base_generation.status().message())));
  }
  auto base_number = ParseChangesNumber(request->base_changes_number());
  if (!base_number.ok()) return scope.Done(base_number.status());

  auto ticket = scope.AdmitStream();
  if (!ticket.ok()) return scope.Done(ticket.status());
  CbtInfo info;
  std::vector<uint8_t> map;
  if (absl::Status s = ReadConsistentMap(*backend_, request->device(), &info, &map); !s.ok()) {
    return scope.Done(s);
  }
  if (absl::Status s = ValidateChangesBase(info, *base_generation, *base_number); !s.ok()) {
    absl::Status named(s.code(), absl::StrCat(request->device(), ": ", s.message()));
    if (IsFullBackupRequired(s)) {
      named.SetPayload(kFullBackupRequiredPayload, *s.GetPayload(kFullBackupRequiredPayload));
    }
    return scope.Done(named);
  }
  const ChangedExtentsPage page =
      FindChangedExtents(map, GeometryOf(info),
                         EffectiveChangesBase(*base_number, info.changes_number),
                         request->start_offset(), request->max_extents());
  v1::ChangedExtentsChunk chunk;
  uint64_t changed_bytes = 0;
  for (size_t i = 0; i < page.extents.size(); ++i) {
    v1::Extent* extent = chunk.add_extents();
    extent->set_offset(page.extents[i].offset);
    extent->set_length(page.extents[i].length);
    changed_bytes += page.extents[i].length;
    if (chunk.extents_size() == static_cast<int>(kExtentsPerMessage) &&
        i + 1 < page.extents.size()) {
      if (CallScope::Expired(*ticket)) {
        return scope.Done(scope.StreamTimeUp(
            absl::StrCat("resume with start_offset=", chunk.extents(0).offset())));
      }
      if (context->IsCancelled() || !writer->Write(chunk)) {
        return scope.Done(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      }
      chunk.clear_extents();
    }
  }
  chunk.set_complete(page.complete);
  chunk.set_next_offset(page.next_offset);
  chunk.set_changed_bytes(changed_bytes);
  chunk.set_generation_id(info.generation_id.ToString());
  chunk.set_changes_number(info.changes_number);
  writer->Write(chunk);
  return scope.Done(grpc::Status::OK);
}

}  // namespace cbt::agent
