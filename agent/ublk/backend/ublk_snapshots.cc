// Snapshots of the ublk backend: take (freeze, quiesce, switch CBT, start copy-on-write),
// image devices, release.
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "backend/errno_status.h"
#include "backend/log.h"
#include "ublk/backend/fs_freeze.h"
#include "ublk/backend/ublk_backend_impl.h"

namespace cbt::ublk {

using agent::LogInfo;
using agent::LogWarning;

absl::StatusOr<std::vector<std::shared_ptr<TrackedDevice>>> UblkBackend::SnapshotDevices(
    const std::vector<std::string>& devices) {
  std::vector<std::shared_ptr<TrackedDevice>> out;
  for (const std::string& device : devices) {
    absl::StatusOr<OriginDevice> origin = Resolve(device);
    if (!origin.ok()) return origin.status();
    std::shared_ptr<TrackedDevice> tracked = FindTracker(origin->resolved_path);
    if (tracked == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(device, " is not tracked; call AttachTracker first"));
    }
    for (const auto& earlier : out) {
      if (earlier == tracked) {
        return absl::InvalidArgumentError(absl::StrCat(
            "device ", device, " is listed twice (same device as ", earlier->origin().device,
            ")"));
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (std::string in = DescribeTracker(*tracked).snapshot_id; !in.empty()) {
      return absl::AlreadyExistsError(
          absl::StrCat(device, " already belongs to snapshot ", in, "; release it first"));
    }
    out.push_back(std::move(tracked));
  }
  return out;
}

absl::Status UblkBackend::CheckDiffStorageLocation(const DiffStorage& storage) {
  struct stat st;
  if (fstat(storage.fd(), &st) != 0) return agent::ErrnoStatus(errno, "stat the diff storage");
  const dev_t where = WholeDiskOf(S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev);
  std::lock_guard<std::mutex> lock(mu_);
  // On a proxy or image the copy-on-write would write through the agent's own queues (and
  // could wait for itself); on a tracked origin it would bypass tracking.
  if (IsServedDevice(where)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "diff storage ", storage.describe(), " is on a device this agent serves (",
        major(where), ":", minor(where), "); put it on a device outside every snapshot"));
  }
  for (const auto& [path, tracked] : trackers_) {
    const agent::DeviceNumber& n = tracked->origin().number;
    if (makedev(n.major, n.minor) == where) {
      return absl::FailedPreconditionError(absl::StrCat(
          "diff storage ", storage.describe(), " is on the tracked device ", path,
          "; put it on a device outside every snapshot"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<agent::SnapshotState> UblkBackend::CreateSnapshot(
    const std::vector<std::string>& devices, const agent::DiffStorageSpec& diff_storage) {
  std::lock_guard<std::mutex> ops(ops_mu_);
  auto tracked = SnapshotDevices(devices);
  if (!tracked.ok()) return tracked.status();
  if (tracked->empty()) return absl::InvalidArgumentError("a snapshot needs at least one device");
  if (diff_storage.path.empty() || diff_storage.path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "diff storage path '", diff_storage.path, "' must be an absolute path"));
  }
  auto storage = DiffStorage::Open({diff_storage.path, diff_storage.limit_bytes},
                                   options_.chunk_size);
  if (!storage.ok()) return storage.status();
  if (absl::Status s = CheckDiffStorageLocation(**storage); !s.ok()) return s;

  auto snapshot = std::make_unique<UblkSnapshot>();
  snapshot->id = NewRandomUuid();
  snapshot->diff_storage = diff_storage;
  snapshot->storage = std::move(*storage);
  snapshot->created_unix_nanos = absl::ToUnixNanos(absl::Now());
  for (std::shared_ptr<TrackedDevice>& device : *tracked) {
    auto member = std::make_unique<SnapshotMember>();
    auto store = CowStore::Create(device->origin_fd(), device->capacity_bytes(),
                                  options_.chunk_size, snapshot->storage);
    if (!store.ok()) return store.status();
    SnapshotMember* raw = member.get();
    store->get()->SetCorruptionCallback(
        [this, raw, id = snapshot->id, origin = device->origin()](int err) {
          raw->error.store(-err, std::memory_order_relaxed);
          LogWarning("ublk", "snapshot %s is corrupted on %s: %s; the device itself keeps "
                     "working", id.ToString().c_str(), origin.device.c_str(),
                     agent::ErrnoText(err).c_str());
          if (events_ == nullptr) return;
          agent::SnapshotEvent event;
          event.snapshot_id = id;
          event.kind = agent::SnapshotEvent::Kind::kCorrupted;
          event.time_unix_nanos = absl::ToUnixNanos(absl::Now());
          event.device = origin.device;
          event.number = origin.number;
          event.errno_value = err;
          events_->Publish(event);
        });
    member->tracked = std::move(device);
    member->store = std::move(*store);
    snapshot->members.push_back(std::move(member));
  }
  if (absl::Status s = TakeSnapshot(*snapshot); !s.ok()) return s;
  // From here on the take has happened (CBT switched, as with blksnap); failures undo the rest.
  for (auto& member : snapshot->members) member->store->AttachCbtMap(&member->tracked->cbt_map());
  absl::Status status = StartImages(*snapshot);
  if (status.ok()) status = PersistSnapshot(*snapshot);
  if (!status.ok()) {
    if (absl::Status s = ReleaseMembers(*snapshot); !s.ok()) {
      LogWarning("ublk", "undoing snapshot %s: %s", snapshot->id.ToString().c_str(),
                 s.ToString().c_str());
    }
    return status;
  }
  const std::string id = snapshot->id.ToString();
  std::lock_guard<std::mutex> lock(mu_);
  agent::SnapshotState out = DescribeSnapshot(*snapshot);
  snapshots_[id] = std::move(snapshot);
  return out;
}

absl::Status UblkBackend::TakeSnapshot(UblkSnapshot& snapshot) {
  const absl::Time start = absl::Now();
  // Freeze first: FIFREEZE writes dirty data through the proxies, which must still run.
  std::vector<std::unique_ptr<FrozenFilesystems>> frozen;
  size_t frozen_count = 0;
  for (auto& member : snapshot.members) {
    const agent::DeviceNumber n = member->tracked->proxy_number();
    auto f = FrozenFilesystems::Freeze(makedev(n.major, n.minor), options_.freeze_timeout);
    if (!f.ok()) return f.status();
    frozen_count += (*f)->frozen().size();
    frozen.push_back(std::move(*f));
  }
  size_t quiesced = 0;
  for (auto& member : snapshot.members) {
    if (absl::Status s = member->tracked->Quiesce(options_.quiesce_timeout); !s.ok()) {
      for (size_t i = 0; i < quiesced; ++i) snapshot.members[i]->tracked->Resume();
      return s;
    }
    ++quiesced;
  }
  const absl::Time quiet = absl::Now();
  for (auto& member : snapshot.members) {
    CbtMap& map = member->tracked->cbt_map();
    // As blksnap's take: a corrupted map starts over (new generation) before the switch.
    if (map.corrupted()) (void)map.Reset(member->tracked->capacity_bytes() >> 9);
    map.Switch();
    member->tracked->StartCopyOnWrite(member->store.get());
  }
  for (auto& member : snapshot.members) member->tracked->Resume();
  const absl::Duration held = absl::Now() - quiet;
  frozen.clear();  // thaw
  LogInfo("ublk", "snapshot %s taken: %zu device(s), %zu file system(s) frozen, I/O held %s, "
          "take %s", snapshot.id.ToString().c_str(), snapshot.members.size(), frozen_count,
          absl::FormatDuration(held).c_str(), absl::FormatDuration(absl::Now() - start).c_str());
  return absl::OkStatus();
}

absl::Status UblkBackend::StartImages(UblkSnapshot& snapshot) {
  for (auto& member : snapshot.members) {
    member->target = std::make_unique<ImageTarget>(member->store.get());
    UblkDeviceOptions shape = member->tracked->DeviceShape();
    // The copy-on-write state lives in this process: an image cannot outlive it.
    shape.user_recovery = false;
    shape.recovery_reissue = false;
    shape.queue_count = 1;
    shape.discard_granularity = 0;
    shape.max_discard_sectors = 0;
    shape.max_write_zeroes_sectors = 0;
    auto image = UblkDevice::Create(shape, member->target.get());
    if (!image.ok()) return image.status();
    member->image = std::move(*image);
    member->image_path = member->image->block_device_path();
    if (absl::Status s = member->image->WaitForBlockDevice(options_.proxy.block_device_timeout);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status UblkBackend::ReleaseMembers(UblkSnapshot& snapshot) {
  absl::Status first;
  for (auto& member : snapshot.members) {
    if (member->image != nullptr) {
      if (absl::Status s = member->image->Delete(); !s.ok()) {
        LogWarning("ublk", "removing image %s: %s", member->image_path.c_str(),
                   s.ToString().c_str());
      }
      member->image.reset();
    }
    member->target.reset();
    if (member->store != nullptr) {
      absl::Status s = member->tracked->StopCopyOnWrite(options_.quiesce_timeout);
      if (!s.ok()) {
        first.Update(s);
        continue;  // the queues may still use the store: keep it
      }
      member->store.reset();
    }
  }
  return first;
}

absl::Status UblkBackend::ReleaseSnapshot(const Uuid& id) {
  std::lock_guard<std::mutex> ops(ops_mu_);
  const std::string key = id.ToString();
  UblkSnapshot* snapshot = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = snapshots_.find(key);
    if (it == snapshots_.end()) return absl::NotFoundError(absl::StrCat("snapshot ", key, " not found"));
    snapshot = it->second.get();
  }
  if (absl::Status s = ReleaseMembers(*snapshot); !s.ok()) return s;
  const uint64_t used = snapshot->storage->used_bytes();
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshots_.erase(key);  // frees the diff storage (an unnamed file disappears)
  }
  ForgetSnapshot(key);
  PublishReleased(id);
  LogInfo("ublk", "snapshot %s released (%llu bytes of diff storage used)", key.c_str(),
          static_cast<unsigned long long>(used));
  return absl::OkStatus();
}

agent::SnapshotState UblkBackend::DescribeSnapshot(const UblkSnapshot& snapshot) const {
  agent::SnapshotState out;
  out.id = snapshot.id;
  out.diff_storage = snapshot.diff_storage;
  out.created_unix_nanos = snapshot.created_unix_nanos;
  out.diff_storage_used_bytes = snapshot.storage->used_bytes();
  for (const auto& member : snapshot.members) {
    agent::SnapshotDeviceState d;
    d.device = member->tracked->origin().device;
    d.resolved_path = member->tracked->origin().resolved_path;
    d.number = member->tracked->origin().number;
    d.image_path = member->image_path;
    d.error_code = member->error.load(std::memory_order_relaxed);
    if (d.error_code != 0) out.corrupted = true;
    out.devices.push_back(std::move(d));
  }
  return out;
}

absl::StatusOr<agent::SnapshotState> UblkBackend::GetSnapshot(const Uuid& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = snapshots_.find(id.ToString());
  if (it == snapshots_.end()) {
    return absl::NotFoundError(absl::StrCat("snapshot ", id.ToString(), " not found"));
  }
  return DescribeSnapshot(*it->second);
}

absl::StatusOr<std::vector<agent::SnapshotState>> UblkBackend::ListSnapshots() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<agent::SnapshotState> out;
  for (const auto& [id, snapshot] : snapshots_) out.push_back(DescribeSnapshot(*snapshot));
  return out;
}

absl::Status UblkBackend::PersistSnapshot(const UblkSnapshot& snapshot) {
  if (state_ == nullptr) return absl::OkStatus();
  return state_->Update([&](cbtagent::state::AgentState& state) {
    auto* record = state.add_snapshots();
    record->set_id(snapshot.id.ToString());
    for (const auto& member : snapshot.members) {
      record->add_devices(member->tracked->origin().device);
      if (member->image != nullptr) record->add_ublk_image_dev_ids(member->image->id());
    }
    record->set_diff_storage_path(snapshot.diff_storage.path);
    record->set_diff_storage_limit_bytes(snapshot.diff_storage.limit_bytes);
    record->set_created_unix_nanos(snapshot.created_unix_nanos);
  });
}

void UblkBackend::ForgetSnapshot(const std::string& id) {
  if (state_ == nullptr) return;
  absl::Status s = state_->Update([&](cbtagent::state::AgentState& state) {
    auto* snapshots = state.mutable_snapshots();
    for (int i = snapshots->size() - 1; i >= 0; --i) {
      if (snapshots->Get(i).id() == id) snapshots->DeleteSubrange(i, 1);
    }
  });
  if (!s.ok()) LogWarning("ublk", "saving the state: %s", s.ToString().c_str());
}

void UblkBackend::PublishReleased(const Uuid& id) {
  if (events_ == nullptr) return;
  agent::SnapshotEvent event;
  event.snapshot_id = id;
  event.kind = agent::SnapshotEvent::Kind::kReleased;
  event.time_unix_nanos = absl::ToUnixNanos(absl::Now());
  events_->Publish(event);
}

}  // namespace cbt::ublk
