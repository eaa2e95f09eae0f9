#include "blksnap/blksnap_backend.h"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "backend/errno_status.h"
#include "blksnap/control.h"
#include "blksnap/event_watcher.h"
#include "blksnap/filter.h"
#include "blksnap/flavour.h"
#include "backend/log.h"
#include "blksnap/uapi.h"

namespace cbt::blksnap {
namespace {

using agent::DeviceNumber;
using agent::ErrnoStatus;
using agent::SnapshotDeviceState;
using agent::SnapshotState;
using agent::TrackerState;

constexpr uint64_t kSectorBytes = 512;
constexpr uint64_t kMapSliceBytes = uint64_t{1} << 20;
constexpr char kBackendName[] = "blksnap";

// A tracker that answers with one of these is gone (detached behind our back, device removed,
// module reloaded, reboot).
bool IsTrackerGone(int err) { return err == ENOENT || err == ENODEV || err == ENXIO; }

// A device of the snapshot whose info call said the snapshot or the device is not there (being
// released, or removed) - as opposed to a snapshot the kernel reports corrupted.
bool HasGoneDevice(const SnapshotState& state) {
  for (const SnapshotDeviceState& device : state.devices) {
    if (IsTrackerGone(-device.error_code) || device.error_code == -ESRCH) return true;
  }
  return false;
}

std::string NumberText(const DeviceNumber& number) {
  return absl::StrCat(number.major, ":", number.minor);
}

std::string ImagePath(const blksnap_snapshotinfo& info) {
  const char* name = reinterpret_cast<const char*>(info.image);
  const std::string image(name, strnlen(name, sizeof(info.image)));
  return image.empty() ? std::string() : absl::StrCat("/dev/", image);
}

struct ResolvedDevice {
  std::string device;    // as given
  std::string resolved;  // canonical
  DeviceNumber number;
};

// A device the agent tracks, with the descriptor the filter ioctls use. Shared so that readers
// can keep using it while it is being detached; the descriptor closes with the last user.
struct Tracked {
  Tracked(Kernel& k, std::string dev, std::string res, DeviceNumber num, int descriptor)
      : kernel(k), device(std::move(dev)), resolved(std::move(res)), number(num), fd(descriptor) {}
  ~Tracked() {
    if (fd >= 0) kernel.Close(fd);
  }
  Tracked(const Tracked&) = delete;
  Tracked& operator=(const Tracked&) = delete;

  DeviceRef ref() const { return DeviceRef{fd, resolved}; }

  Kernel& kernel;
  const std::string device;    // as attached
  const std::string resolved;  // canonical
  const DeviceNumber number;
  const int fd;
  std::atomic<uint64_t> capacity_bytes{0};
};

// A snapshot the agent made. Everything but the watcher is fixed once it is in the table.
struct Snapshot {
  Uuid id;
  std::vector<SnapshotDeviceState> devices;
  agent::DiffStorageSpec diff_storage;
  int64_t created_unix_nanos = 0;
  std::unique_ptr<EventWatcher> watcher;
};

class BlksnapBackend final : public agent::Backend {
 public:
  BlksnapBackend(std::unique_ptr<Kernel> kernel, FlavourChoice choice,
                 const BlksnapBackendOptions& options, agent::EventSink* events,
                 agent::StateStore* state)
      : kernel_(std::move(kernel)),
        choice_(std::move(choice)),
        options_(options),
        events_(events),
        state_(state) {}

  ~BlksnapBackend() override { Shutdown(); }

  absl::Status Init();

  agent::BackendDescription Describe() const override;
  absl::StatusOr<TrackerState> AttachTracker(const std::string& device,
                                             bool* already_attached) override;
  absl::Status DetachTracker(const std::string& device) override;
  absl::StatusOr<TrackerState> GetTracker(const std::string& device) override;
  absl::StatusOr<std::vector<TrackerState>> ListTrackers() override;
  absl::StatusOr<SnapshotState> CreateSnapshot(const std::vector<std::string>& devices,
                                               const agent::DiffStorageSpec& diff_storage) override;
  absl::Status ReleaseSnapshot(const Uuid& id) override;
  absl::StatusOr<SnapshotState> GetSnapshot(const Uuid& id) override;
  absl::StatusOr<std::vector<SnapshotState>> ListSnapshots() override;
  absl::StatusOr<CbtInfo> GetCbtInfo(const std::string& device) override;
  absl::Status ReadCbtMap(const std::string& device, uint64_t offset, uint64_t length,
                          uint8_t* out) override;
  absl::Status MarkDirty(const std::string& device,
                         const std::vector<agent::SectorRange>& ranges) override;
  void Shutdown() override;

 private:
  absl::Status CheckRunning() const;
  absl::StatusOr<ResolvedDevice> Resolve(const std::string& device);
  // Opens the device (O_RDONLY) and reads its capacity.
  absl::StatusOr<std::shared_ptr<Tracked>> OpenDevice(const ResolvedDevice& device);
  std::shared_ptr<Tracked> FindTracker(const std::string& resolved) const;
  std::shared_ptr<Snapshot> FindSnapshot(const Uuid& id) const;
  // Resolve + FindTracker; NotFound "<device> is not tracked" when the agent does not track it.
  absl::StatusOr<std::shared_ptr<Tracked>> RequireTracker(const std::string& device);
  // Runs `call` with a reference to the device: the tracker's descriptor, or a temporary one.
  int WithDevice(const std::string& resolved, const std::function<int(const DeviceRef&)>& call);
  void RefreshCapacity(Tracked& tracked);
  TrackerState MakeTrackerStateLocked(const Tracked& tracked) const;
  SnapshotState DescribeSnapshot(const Snapshot& snapshot);
  static SnapshotState UnknownSnapshot(const Uuid& id);

  absl::Status PersistTracker(const Tracked& tracked);
  // Removes trackers from the table and the state (not from the kernel).
  void DropTrackers(const std::vector<std::string>& resolved_paths);
  absl::Status PersistSnapshot(const Snapshot& snapshot);
  void ForgetSnapshotRecords(const std::vector<std::string>& ids);
  // The pending record of a CreateSnapshot (orphan policy, blksnap_backend.h): written before
  // SNAPSHOT_CREATE, given the id right after it, replaced by PersistSnapshot after the take.
  absl::Status PersistIntent(const std::string& intent, const std::vector<ResolvedDevice>& devices,
                             const agent::DiffStorageSpec& diff_storage,
                             const std::vector<Uuid>& preexisting);
  absl::Status RecordIntentId(const std::string& intent, const Uuid& id);
  void ForgetIntent(const std::string& intent);
  // Start-up: which snapshot, if any, the pending `record` left in the kernel. `alive` is what
  // the kernel lists, `explained` every id some record (or an earlier orphan) accounts for.
  std::optional<Uuid> FindOrphan(const cbtagent::state::SnapshotRecord& record,
                                 const std::vector<Uuid>& alive,
                                 const std::set<std::string>& explained);

  absl::StatusOr<std::vector<Uuid>> Collect();
  // The lookups as they ran before the fast paths: under ops_mu_, dropping vanished entries.
  absl::StatusOr<TrackerState> GetTrackerLocked(const std::string& device);
  absl::StatusOr<std::vector<TrackerState>> ListTrackersLocked();
  absl::StatusOr<SnapshotState> GetSnapshotLocked(const Uuid& id);
  absl::StatusOr<std::vector<SnapshotState>> ListSnapshotsLocked();
  // Stops `watcher` without waiting for it; it is joined once its thread has ended. (ops_mu_)
  void RetireWatcher(std::unique_ptr<EventWatcher> watcher);
  // Drops table entries (and state records) of snapshots the kernel no longer lists.
  void DropVanishedSnapshots(const std::vector<Uuid>& listed);
  void StartWatcher(Snapshot& snapshot);

  absl::StatusOr<std::vector<std::shared_ptr<Tracked>>> ValidateSnapshotDevices(
      const std::vector<std::string>& devices, std::vector<ResolvedDevice>* resolved);

  // Declared first: destroyed last (everything below uses it).
  const std::unique_ptr<Kernel> kernel_;
  const FlavourChoice choice_;
  const BlksnapBackendOptions options_;
  agent::EventSink* const events_;
  agent::StateStore* const state_;
  std::unique_ptr<Control> control_;
  std::unique_ptr<FilterTransport> filter_;

  // Serializes the operations that change kernel objects or the tables' membership (attach,
  // detach, create, release, and the lookups that drop vanished entries), so that validation
  // and commit see the same world. Taken before mu_. CBT reads do not take it, and neither do
  // the lookups (GetTracker, ListTrackers, GetSnapshot, ListSnapshots) while what the kernel
  // reports agrees with the tables: create and release hold it across state-file fsyncs, and
  // polling controllers must not queue behind those. Only a disagreement (a tracker gone, a
  // snapshot known to one side only, a snapshot device reported gone) sends a lookup to its
  // *Locked form, which waits for the operation in flight and then answers and cleans up.
  std::mutex ops_mu_;
  // Watchers of released snapshots, told to stop but maybe still inside one WAIT_EVENT; reaped
  // once finished so that a release never waits for the kernel's wait timeout. (ops_mu_)
  std::vector<std::unique_ptr<EventWatcher>> retired_watchers_;
  // Guards the tables; held only for short lookups and edits, never across WAIT_EVENT or any
  // other blocking kernel call.
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Tracked>> trackers_;   // by resolved path
  std::map<std::string, std::shared_ptr<Snapshot>> snapshots_;  // by id text
  std::atomic<bool> shut_down_{false};
};

// ------------------------------------------------------------------------------------------
// Helpers

absl::Status BlksnapBackend::CheckRunning() const {
  if (shut_down_.load()) return absl::UnavailableError("the blksnap backend is shut down");
  return absl::OkStatus();
}

absl::StatusOr<ResolvedDevice> BlksnapBackend::Resolve(const std::string& device) {
  if (device.empty() || device[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("device path '", device, "' must be an absolute path"));
  }
  ResolvedDevice out;
  out.device = device;
  if (int err = kernel_->RealPath(device, &out.resolved); err != 0) {
    return ErrnoStatus(err, absl::StrCat("device ", device));
  }
  FileStatus status;
  if (int err = kernel_->Stat(out.resolved, &status); err != 0) {
    return ErrnoStatus(err, absl::StrCat("device ", device));
  }
  if (!status.is_block_device) {
    return absl::InvalidArgumentError(
        out.resolved == device
            ? absl::StrCat(device, " is not a block device")
            : absl::StrCat(device, " (", out.resolved, ") is not a block device"));
  }
  out.number = DeviceNumber{status.rdev_major, status.rdev_minor};
  return out;
}

absl::StatusOr<std::shared_ptr<Tracked>> BlksnapBackend::OpenDevice(const ResolvedDevice& device) {
  int fd = -1;
  if (int err = kernel_->Open(device.resolved, O_RDONLY, &fd); err != 0) {
    return ErrnoStatus(err, absl::StrCat("cannot open ", device.resolved));
  }
  auto tracked = std::make_shared<Tracked>(*kernel_, device.device, device.resolved,
                                           device.number, fd);
  uint64_t capacity = 0;
  if (int err = kernel_->Ioctl(fd, kBlkGetSize64, &capacity); err != 0) {
    return ErrnoStatus(err, absl::StrCat("BLKGETSIZE64 on ", device.resolved));
  }
  tracked->capacity_bytes.store(capacity);
  return tracked;
}

std::shared_ptr<Tracked> BlksnapBackend::FindTracker(const std::string& resolved) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = trackers_.find(resolved);
  return it == trackers_.end() ? nullptr : it->second;
}

std::shared_ptr<Snapshot> BlksnapBackend::FindSnapshot(const Uuid& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = snapshots_.find(id.ToString());
  return it == snapshots_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<Tracked>> BlksnapBackend::RequireTracker(const std::string& device) {
  absl::StatusOr<ResolvedDevice> resolved = Resolve(device);
  if (!resolved.ok()) return resolved.status();
  std::shared_ptr<Tracked> tracked = FindTracker(resolved->resolved);
  if (tracked == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        device, resolved->resolved == device ? "" : absl::StrCat(" (", resolved->resolved, ")"),
        " is not tracked; call AttachTracker first"));
  }
  return tracked;
}

int BlksnapBackend::WithDevice(const std::string& resolved,
                               const std::function<int(const DeviceRef&)>& call) {
  if (std::shared_ptr<Tracked> tracked = FindTracker(resolved)) return call(tracked->ref());
  int fd = -1;
  if (int err = kernel_->Open(resolved, O_RDONLY, &fd); err != 0) return err;
  const int err = call(DeviceRef{fd, resolved});
  kernel_->Close(fd);
  return err;
}

void BlksnapBackend::RefreshCapacity(Tracked& tracked) {
  uint64_t capacity = 0;
  if (kernel_->Ioctl(tracked.fd, kBlkGetSize64, &capacity) == 0) {
    tracked.capacity_bytes.store(capacity);
  }
}

TrackerState BlksnapBackend::MakeTrackerStateLocked(const Tracked& tracked) const {
  TrackerState state;
  state.device = tracked.device;
  state.resolved_path = tracked.resolved;
  state.number = tracked.number;
  state.capacity_bytes = tracked.capacity_bytes.load();
  state.io_path = tracked.resolved;
  for (const auto& [id, snapshot] : snapshots_) {
    for (const SnapshotDeviceState& device : snapshot->devices) {
      if (device.resolved_path == tracked.resolved) {
        state.snapshot_id = id;
        state.image_path = device.image_path;
      }
    }
  }
  return state;
}

SnapshotState BlksnapBackend::UnknownSnapshot(const Uuid& id) {
  SnapshotState state;
  state.id = id;
  state.known_to_agent = false;
  return state;
}

SnapshotState BlksnapBackend::DescribeSnapshot(const Snapshot& snapshot) {
  SnapshotState state;
  state.id = snapshot.id;
  state.devices = snapshot.devices;
  state.diff_storage = snapshot.diff_storage;
  state.known_to_agent = true;
  state.created_unix_nanos = snapshot.created_unix_nanos;
  for (SnapshotDeviceState& device : state.devices) {
    if (device.resolved_path.empty()) {
      device.error_code = -ENODEV;
    } else {
      blksnap_snapshotinfo info{};
      const int err = WithDevice(device.resolved_path, [&](const DeviceRef& ref) {
        return filter_->SnapshotInfo(ref, &info);
      });
      if (err == 0) {
        device.error_code = info.error_code;
        device.image_path = ImagePath(info);
      } else {
        device.error_code = -err;
      }
    }
    if (device.error_code != 0) state.corrupted = true;
  }
  return state;
}

absl::Status BlksnapBackend::PersistTracker(const Tracked& tracked) {
  if (state_ == nullptr) return absl::OkStatus();
  return state_->Update([&](cbtagent::state::AgentState& state) {
    state.set_backend(kBackendName);
    auto* records = state.mutable_trackers();
    for (int i = records->size() - 1; i >= 0; --i) {
      if (records->Get(i).resolved_path() == tracked.resolved) records->DeleteSubrange(i, 1);
    }
    cbtagent::state::TrackerRecord* record = records->Add();
    record->set_device(tracked.device);
    record->set_resolved_path(tracked.resolved);
    record->set_major(tracked.number.major);
    record->set_minor(tracked.number.minor);
  });
}

void BlksnapBackend::DropTrackers(const std::vector<std::string>& resolved_paths) {
  if (resolved_paths.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& path : resolved_paths) trackers_.erase(path);
  }
  if (state_ == nullptr) return;
  const std::set<std::string> drop(resolved_paths.begin(), resolved_paths.end());
  absl::Status status = state_->Update([&](cbtagent::state::AgentState& state) {
    auto* records = state.mutable_trackers();
    for (int i = records->size() - 1; i >= 0; --i) {
      if (drop.count(records->Get(i).resolved_path()) != 0) records->DeleteSubrange(i, 1);
    }
  });
  if (!status.ok()) {
    agent::LogWarning("blksnap", "cannot remove trackers from the state: %s", status.ToString().c_str());
  }
}

absl::Status BlksnapBackend::PersistSnapshot(const Snapshot& snapshot) {
  if (state_ == nullptr) return absl::OkStatus();
  const std::string id = snapshot.id.ToString();
  return state_->Update([&](cbtagent::state::AgentState& state) {
    state.set_backend(kBackendName);
    auto* records = state.mutable_snapshots();
    for (int i = records->size() - 1; i >= 0; --i) {
      if (records->Get(i).id() == id) records->DeleteSubrange(i, 1);
    }
    cbtagent::state::SnapshotRecord* record = records->Add();
    record->set_id(id);
    for (const SnapshotDeviceState& device : snapshot.devices) record->add_devices(device.device);
    record->set_diff_storage_path(snapshot.diff_storage.path);
    record->set_diff_storage_limit_bytes(snapshot.diff_storage.limit_bytes);
    record->set_created_unix_nanos(snapshot.created_unix_nanos);
  });
}

void BlksnapBackend::ForgetSnapshotRecords(const std::vector<std::string>& ids) {
  if (state_ == nullptr || ids.empty()) return;
  const std::set<std::string> drop(ids.begin(), ids.end());
  absl::Status status = state_->Update([&](cbtagent::state::AgentState& state) {
    auto* records = state.mutable_snapshots();
    for (int i = records->size() - 1; i >= 0; --i) {
      if (drop.count(records->Get(i).id()) != 0) records->DeleteSubrange(i, 1);
    }
  });
  if (!status.ok()) {
    agent::LogWarning("blksnap", "cannot remove snapshots from the state: %s", status.ToString().c_str());
  }
}

absl::Status BlksnapBackend::PersistIntent(const std::string& intent,
                                           const std::vector<ResolvedDevice>& devices,
                                           const agent::DiffStorageSpec& diff_storage,
                                           const std::vector<Uuid>& preexisting) {
  if (state_ == nullptr) return absl::OkStatus();
  return state_->Update([&](cbtagent::state::AgentState& state) {
    state.set_backend(kBackendName);
    cbtagent::state::SnapshotRecord* record = state.add_snapshots();
    record->set_pending(true);
    record->set_intent(intent);
    for (const ResolvedDevice& device : devices) record->add_devices(device.device);
    record->set_diff_storage_path(diff_storage.path);
    record->set_diff_storage_limit_bytes(diff_storage.limit_bytes);
    record->set_created_unix_nanos(absl::ToUnixNanos(absl::Now()));
    for (const Uuid& id : preexisting) record->add_preexisting_ids(id.ToString());
  });
}

absl::Status BlksnapBackend::RecordIntentId(const std::string& intent, const Uuid& id) {
  if (state_ == nullptr) return absl::OkStatus();
  return state_->Update([&](cbtagent::state::AgentState& state) {
    for (cbtagent::state::SnapshotRecord& record : *state.mutable_snapshots()) {
      if (record.pending() && record.intent() == intent) {
        record.set_id(id.ToString());
        record.clear_preexisting_ids();  // the id says it all now
      }
    }
  });
}

void BlksnapBackend::ForgetIntent(const std::string& intent) {
  if (state_ == nullptr || intent.empty()) return;
  absl::Status status = state_->Update([&](cbtagent::state::AgentState& state) {
    auto* records = state.mutable_snapshots();
    for (int i = records->size() - 1; i >= 0; --i) {
      if (records->Get(i).pending() && records->Get(i).intent() == intent) {
        records->DeleteSubrange(i, 1);
      }
    }
  });
  if (!status.ok()) {
    agent::LogWarning("blksnap", "cannot remove a snapshot intent from the state: %s",
                      status.ToString().c_str());
  }
}

std::optional<Uuid> BlksnapBackend::FindOrphan(const cbtagent::state::SnapshotRecord& record,
                                               const std::vector<Uuid>& alive,
                                               const std::set<std::string>& explained) {
  if (!record.id().empty()) {
    for (const Uuid& id : alive) {
      if (id.ToString() == record.id()) return id;
    }
    agent::LogInfo("blksnap",
                   "interrupted snapshot creation %s: the kernel no longer holds the snapshot",
                   record.id().c_str());
    return std::nullopt;
  }
  // Killed between SNAPSHOT_CREATE and learning its id: the orphan, if CREATE ran, is the
  // snapshot that appeared since the intent and that nothing else accounts for.
  const std::set<std::string> before(record.preexisting_ids().begin(),
                                     record.preexisting_ids().end());
  std::vector<Uuid> candidates;
  for (const Uuid& id : alive) {
    const std::string text = id.ToString();
    if (before.count(text) == 0 && explained.count(text) == 0) candidates.push_back(id);
  }
  if (candidates.size() == 1) return candidates[0];
  if (candidates.empty()) {
    agent::LogInfo("blksnap",
                   "interrupted snapshot creation (intent %s) left no snapshot in the kernel",
                   record.intent().c_str());
  } else {
    agent::LogWarning(
        "blksnap",
        "interrupted snapshot creation (intent %s): %zu snapshots appeared in the kernel since, "
        "and without the id the agent cannot tell its own from another tool's; none is released "
        "(they are listed with known_to_agent=false; release the agent's by hand)",
        record.intent().c_str(), candidates.size());
  }
  return std::nullopt;
}

absl::StatusOr<std::vector<Uuid>> BlksnapBackend::Collect() {
  std::vector<Uuid> ids;
  if (int err = control_->Collect(&ids); err != 0) {
    return ErrnoStatus(err, absl::StrCat("IOCTL_BLKSNAP_SNAPSHOT_COLLECT on ", control_->path()),
                       err == EPERM || err == EACCES ? absl::StatusCode::kPermissionDenied
                                                     : absl::StatusCode::kUnavailable);
  }
  return ids;
}

void BlksnapBackend::DropVanishedSnapshots(const std::vector<Uuid>& listed) {
  std::set<std::string> alive;
  for (const Uuid& id : listed) alive.insert(id.ToString());
  std::vector<std::shared_ptr<Snapshot>> vanished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = snapshots_.begin(); it != snapshots_.end();) {
      if (alive.count(it->first) == 0) {
        vanished.push_back(it->second);
        it = snapshots_.erase(it);
      } else {
        ++it;
      }
    }
  }
  std::vector<std::string> ids;
  for (const std::shared_ptr<Snapshot>& snapshot : vanished) {
    ids.push_back(snapshot->id.ToString());
    agent::LogInfo("blksnap", "snapshot %s no longer exists in the kernel; forgetting it", ids.back().c_str());
    if (snapshot->watcher) {
      snapshot->watcher->set_expect_gone(true);
      snapshot->watcher->Stop();
      snapshot->watcher->PublishReleasedOnce();
    }
  }
  ForgetSnapshotRecords(ids);
}

void BlksnapBackend::StartWatcher(Snapshot& snapshot) {
  std::vector<WatchedDevice> devices;
  for (const SnapshotDeviceState& device : snapshot.devices) {
    devices.push_back(WatchedDevice{device.number, device.resolved_path.empty()
                                                       ? device.device
                                                       : device.resolved_path});
  }
  snapshot.watcher = std::make_unique<EventWatcher>(
      control_.get(), choice_.flavour, snapshot.id, std::move(devices),
      options_.event_wait_jiffies, events_);
  snapshot.watcher->Start();
}

// ------------------------------------------------------------------------------------------
// Construction and restart

absl::Status BlksnapBackend::Init() {
  absl::StatusOr<std::unique_ptr<Control>> control = Control::Open(*kernel_, choice_.control_device);
  if (!control.ok()) return control.status();
  control_ = std::move(*control);
  absl::StatusOr<std::unique_ptr<FilterTransport>> filter =
      NewFilterTransport(*kernel_, choice_.flavour);
  if (!filter.ok()) return filter.status();
  filter_ = std::move(*filter);

  if (state_ == nullptr) return absl::OkStatus();
  cbtagent::state::AgentState stored = state_->Get();
  if (!stored.backend().empty() && stored.backend() != kBackendName) {
    agent::LogWarning("blksnap", "state directory %s holds state of the '%s' backend; not reusing it",
               state_->directory().c_str(), stored.backend().c_str());
    stored.Clear();
  }
  cbtagent::state::AgentState kept;
  kept.set_backend(kBackendName);

  // Trackers: keep those whose device is still the same and whose CBT still answers.
  for (const cbtagent::state::TrackerRecord& record : stored.trackers()) {
    const std::string& path =
        record.resolved_path().empty() ? record.device() : record.resolved_path();
    absl::StatusOr<ResolvedDevice> resolved = Resolve(path);
    if (!resolved.ok()) {
      agent::LogInfo("blksnap", "tracker of %s dropped: %s", path.c_str(), resolved.status().ToString().c_str());
      continue;
    }
    if (resolved->number != DeviceNumber{record.major(), record.minor()}) {
      agent::LogInfo("blksnap", "tracker of %s dropped: the device is now %s, was %u:%u", path.c_str(),
              NumberText(resolved->number).c_str(), record.major(), record.minor());
      continue;
    }
    resolved->device = record.device().empty() ? path : record.device();
    absl::StatusOr<std::shared_ptr<Tracked>> tracked = OpenDevice(*resolved);
    if (!tracked.ok()) {
      agent::LogInfo("blksnap", "tracker of %s dropped: %s", path.c_str(), tracked.status().ToString().c_str());
      continue;
    }
    blksnap_cbtinfo info{};
    if (int err = filter_->CbtInfo((*tracked)->ref(), &info); err != 0) {
      agent::LogInfo("blksnap", "tracker of %s dropped: the kernel has no tracker for it any more: %s (errno %d)",
              path.c_str(), agent::ErrnoText(err).c_str(), err);
      continue;
    }
    trackers_[resolved->resolved] = *tracked;
    *kept.add_trackers() = record;
  }

  // Snapshots: keep the complete ones the kernel still holds and watch their events again;
  // release the orphans of interrupted CreateSnapshot calls (pending records).
  absl::StatusOr<std::vector<Uuid>> listed = Collect();
  if (!listed.ok()) return listed.status();
  std::set<std::string> alive;
  for (const Uuid& id : *listed) alive.insert(id.ToString());
  std::set<std::string> explained;
  for (const cbtagent::state::SnapshotRecord& record : stored.snapshots()) {
    if (!record.id().empty()) explained.insert(record.id());
  }
  for (const cbtagent::state::SnapshotRecord& record : stored.snapshots()) {
    if (!record.pending()) continue;
    std::optional<Uuid> orphan = FindOrphan(record, *listed, explained);
    if (!orphan.has_value()) continue;
    const std::string id_text = orphan->ToString();
    explained.insert(id_text);
    const int err = control_->Destroy(*orphan);
    if (err != 0 && err != ENODEV) {
      agent::LogWarning("blksnap",
                        "orphan snapshot %s (creation interrupted by an agent crash): release "
                        "failed: %s (errno %d); retried at the next start",
                        id_text.c_str(), agent::ErrnoText(err).c_str(), err);
      cbtagent::state::SnapshotRecord* kept_record = kept.add_snapshots();
      *kept_record = record;
      kept_record->set_id(id_text);
      continue;
    }
    alive.erase(id_text);
    agent::LogInfo("blksnap",
                   "released orphan snapshot %s: its creation (devices %s) was interrupted by "
                   "an agent crash and never reported to a caller",
                   id_text.c_str(), absl::StrJoin(record.devices(), ", ").c_str());
  }
  for (const cbtagent::state::SnapshotRecord& record : stored.snapshots()) {
    if (record.pending()) continue;
    absl::StatusOr<Uuid> id = ParseUuid(record.id());
    if (!id.ok() || alive.count(id->ToString()) == 0) {
      agent::LogInfo("blksnap", "snapshot %s no longer exists; forgetting it", record.id().c_str());
      continue;
    }
    auto snapshot = std::make_shared<Snapshot>();
    snapshot->id = *id;
    snapshot->diff_storage.path = record.diff_storage_path();
    snapshot->diff_storage.limit_bytes = record.diff_storage_limit_bytes();
    snapshot->created_unix_nanos = record.created_unix_nanos();
    for (const std::string& device : record.devices()) {
      SnapshotDeviceState state;
      state.device = device;
      if (absl::StatusOr<ResolvedDevice> resolved = Resolve(device); resolved.ok()) {
        state.resolved_path = resolved->resolved;
        state.number = resolved->number;
        blksnap_snapshotinfo info{};
        if (WithDevice(state.resolved_path, [&](const DeviceRef& ref) {
              return filter_->SnapshotInfo(ref, &info);
            }) == 0) {
          state.image_path = ImagePath(info);
          state.error_code = info.error_code;
        }
      }
      snapshot->devices.push_back(std::move(state));
    }
    StartWatcher(*snapshot);
    snapshots_[id->ToString()] = std::move(snapshot);
    *kept.add_snapshots() = record;
  }

  if (absl::Status status = state_->Put(kept); !status.ok()) {
    agent::LogWarning("blksnap", "cannot save the cleaned state: %s", status.ToString().c_str());
  }
  agent::LogInfo("blksnap", "%s; %zu tracker(s) and %zu snapshot(s) restored", choice_.reason.c_str(),
          trackers_.size(), snapshots_.size());
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------------------
// Backend

agent::BackendDescription BlksnapBackend::Describe() const {
  agent::BackendDescription description;
  description.kind = agent::BackendKind::kBlksnap;
  description.reason = choice_.reason;
  description.blksnap_flavour = FlavourName(choice_.flavour);
  description.module_version = choice_.module_version;
  description.control_device = choice_.control_device;
  return description;
}

absl::StatusOr<TrackerState> BlksnapBackend::AttachTracker(const std::string& device,
                                                           bool* already_attached) {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  std::lock_guard<std::mutex> ops(ops_mu_);
  absl::StatusOr<ResolvedDevice> resolved = Resolve(device);
  if (!resolved.ok()) return resolved.status();

  std::shared_ptr<Tracked> tracked = FindTracker(resolved->resolved);
  const bool known = tracked != nullptr;
  if (!known) {
    absl::StatusOr<std::shared_ptr<Tracked>> opened = OpenDevice(*resolved);
    if (!opened.ok()) return opened.status();
    tracked = std::move(*opened);
  }
  const std::string context = absl::StrCat("attach tracker to ", device);
  const int err = filter_->Attach(tracked->ref());
  bool already = false;
  if (err == EALREADY) {
    already = true;
  } else if (err == EBUSY) {
    return ErrnoStatus(err, absl::StrCat(context, " (another block-device filter is attached)"),
                       absl::StatusCode::kFailedPrecondition);
  } else if (err == ENOENT || err == ENODEV) {
    return ErrnoStatus(err,
                       absl::StrCat(context, err == ENOENT
                                                 ? " (filter 'blksnap' not registered: module "
                                                   "unloaded?)"
                                                 : " (the disk is going away)"),
                       absl::StatusCode::kUnavailable);
  } else if (err != 0) {
    return ErrnoStatus(err, context);
  }
  if (!known) RefreshCapacity(*tracked);
  {
    std::lock_guard<std::mutex> lock(mu_);
    trackers_[tracked->resolved] = tracked;
  }
  if (absl::Status status = PersistTracker(*tracked); !status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat("tracker attached to ", device,
                                     " but the agent state could not be saved: ",
                                     status.message()));
  }
  if (already_attached != nullptr) *already_attached = already;
  std::lock_guard<std::mutex> lock(mu_);
  return MakeTrackerStateLocked(*tracked);
}

absl::Status BlksnapBackend::DetachTracker(const std::string& device) {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  std::lock_guard<std::mutex> ops(ops_mu_);
  absl::StatusOr<ResolvedDevice> resolved = Resolve(device);
  if (!resolved.ok()) return resolved.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, snapshot] : snapshots_) {
      for (const SnapshotDeviceState& member : snapshot->devices) {
        if (member.resolved_path == resolved->resolved) {
          return absl::FailedPreconditionError(absl::StrCat(
              "cannot detach the tracker of ", device, ": it belongs to snapshot ", id,
              "; release the snapshot first"));
        }
      }
    }
  }
  // A snapshot made by another tool.
  blksnap_snapshotinfo info{};
  if (WithDevice(resolved->resolved, [&](const DeviceRef& ref) {
        return filter_->SnapshotInfo(ref, &info);
      }) == 0 &&
      !ImagePath(info).empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot detach the tracker of ", device, ": it belongs to a snapshot (image ",
        ImagePath(info), ") not made by this agent; release that snapshot first"));
  }
  const int err = WithDevice(resolved->resolved,
                             [&](const DeviceRef& ref) { return filter_->Detach(ref); });
  if (err == ENOENT) {
    DropTrackers({resolved->resolved});
    return ErrnoStatus(err, absl::StrCat("detach tracker from ", device, ": not tracked"),
                       absl::StatusCode::kNotFound);
  }
  if (err != 0) return ErrnoStatus(err, absl::StrCat("detach tracker from ", device));
  DropTrackers({resolved->resolved});
  return absl::OkStatus();
}

absl::StatusOr<TrackerState> BlksnapBackend::GetTracker(const std::string& device) {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  absl::StatusOr<std::shared_ptr<Tracked>> tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  blksnap_cbtinfo info{};
  if (IsTrackerGone(filter_->CbtInfo((*tracked)->ref(), &info))) {
    std::lock_guard<std::mutex> ops(ops_mu_);
    return GetTrackerLocked(device);
  }
  RefreshCapacity(**tracked);
  std::lock_guard<std::mutex> lock(mu_);
  return MakeTrackerStateLocked(**tracked);
}

absl::StatusOr<TrackerState> BlksnapBackend::GetTrackerLocked(const std::string& device) {
  absl::StatusOr<std::shared_ptr<Tracked>> tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  blksnap_cbtinfo info{};
  const int err = filter_->CbtInfo((*tracked)->ref(), &info);
  if (IsTrackerGone(err)) {
    DropTrackers({(*tracked)->resolved});
    return ErrnoStatus(err,
                       absl::StrCat(device, " is no longer tracked by the kernel (detached, "
                                            "device removed or rebooted); call AttachTracker"),
                       absl::StatusCode::kNotFound);
  }
  RefreshCapacity(**tracked);
  std::lock_guard<std::mutex> lock(mu_);
  return MakeTrackerStateLocked(**tracked);
}

absl::StatusOr<std::vector<TrackerState>> BlksnapBackend::ListTrackers() {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  std::vector<std::shared_ptr<Tracked>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [path, tracked] : trackers_) all.push_back(tracked);
  }
  for (const std::shared_ptr<Tracked>& tracked : all) {
    blksnap_cbtinfo info{};
    if (IsTrackerGone(filter_->CbtInfo(tracked->ref(), &info))) {
      std::lock_guard<std::mutex> ops(ops_mu_);
      return ListTrackersLocked();
    }
    RefreshCapacity(*tracked);
  }
  std::vector<TrackerState> states;
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::shared_ptr<Tracked>& tracked : all) {
    states.push_back(MakeTrackerStateLocked(*tracked));
  }
  return states;
}

absl::StatusOr<std::vector<TrackerState>> BlksnapBackend::ListTrackersLocked() {
  std::vector<std::shared_ptr<Tracked>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [path, tracked] : trackers_) all.push_back(tracked);
  }
  std::vector<std::string> gone;
  std::vector<std::shared_ptr<Tracked>> alive;
  for (const std::shared_ptr<Tracked>& tracked : all) {
    blksnap_cbtinfo info{};
    const int err = filter_->CbtInfo(tracked->ref(), &info);
    if (IsTrackerGone(err)) {
      agent::LogInfo("blksnap", "tracker of %s is gone from the kernel; forgetting it", tracked->resolved.c_str());
      gone.push_back(tracked->resolved);
      continue;
    }
    RefreshCapacity(*tracked);
    alive.push_back(tracked);
  }
  DropTrackers(gone);
  std::vector<TrackerState> states;
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::shared_ptr<Tracked>& tracked : alive) {
    states.push_back(MakeTrackerStateLocked(*tracked));
  }
  return states;
}

absl::StatusOr<std::vector<std::shared_ptr<Tracked>>> BlksnapBackend::ValidateSnapshotDevices(
    const std::vector<std::string>& devices, std::vector<ResolvedDevice>* resolved_devices) {
  std::vector<std::shared_ptr<Tracked>> trackers;
  for (const std::string& device : devices) {
    absl::StatusOr<ResolvedDevice> resolved = Resolve(device);
    if (!resolved.ok()) return resolved.status();
    for (const ResolvedDevice& earlier : *resolved_devices) {
      if (earlier.resolved == resolved->resolved) {
        return absl::InvalidArgumentError(absl::StrCat(
            "device ", device, " is listed twice (", earlier.device, " is the same device ",
            resolved->resolved, ")"));
      }
    }
    std::shared_ptr<Tracked> tracked = FindTracker(resolved->resolved);
    if (tracked == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(device, " is not tracked; call AttachTracker first"));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [id, snapshot] : snapshots_) {
        for (const SnapshotDeviceState& member : snapshot->devices) {
          if (member.resolved_path == resolved->resolved) {
            return absl::AlreadyExistsError(absl::StrCat(
                device, " already belongs to snapshot ", id, "; release it first"));
          }
        }
      }
    }
    resolved_devices->push_back(*resolved);
    trackers.push_back(std::move(tracked));
  }
  return trackers;
}

absl::StatusOr<SnapshotState> BlksnapBackend::CreateSnapshot(
    const std::vector<std::string>& devices, const agent::DiffStorageSpec& diff_storage) {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  if (devices.empty()) {
    return absl::InvalidArgumentError("a snapshot needs at least one device");
  }
  const std::string& diff_path = diff_storage.path;
  if (diff_path.empty() || diff_path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("diff storage path '", diff_path, "' must be an absolute path"));
  }
  if (diff_storage.limit_bytes == 0 || diff_storage.limit_bytes % kSectorBytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "diff storage limit ", diff_storage.limit_bytes,
        " bytes must be a positive multiple of 512"));
  }

  std::lock_guard<std::mutex> ops(ops_mu_);
  std::vector<ResolvedDevice> resolved;
  absl::StatusOr<std::vector<std::shared_ptr<Tracked>>> trackers =
      ValidateSnapshotDevices(devices, &resolved);
  if (!trackers.ok()) return trackers.status();

  FileStatus storage;
  if (int err = kernel_->Stat(diff_path, &storage); err != 0) {
    return ErrnoStatus(err, absl::StrCat("diff storage ", diff_path));
  }
  if (!storage.is_directory && !storage.is_regular_file && !storage.is_block_device) {
    return absl::InvalidArgumentError(absl::StrCat(
        "diff storage ", diff_path, " must be a directory, a regular file or a block device"));
  }
  const DeviceNumber storage_device =
      storage.is_block_device ? DeviceNumber{storage.rdev_major, storage.rdev_minor}
                              : DeviceNumber{storage.dev_major, storage.dev_minor};
  for (const ResolvedDevice& device : resolved) {
    if (device.number == storage_device) {
      return absl::FailedPreconditionError(absl::StrCat(
          "diff storage ", diff_path,
          storage.is_block_device ? " is " : " lives on ", "device ", device.device, " (",
          NumberText(device.number),
          "), which is part of this snapshot; the kernel would silently leave that device "
          "out. Put the diff storage on another device"));
    }
  }

  // The intent goes to the state before the kernel has anything (orphan policy).
  std::string intent;
  if (state_ != nullptr) {
    absl::StatusOr<std::vector<Uuid>> before = Collect();
    if (!before.ok()) return before.status();
    intent = NewRandomUuid().ToString();
    if (absl::Status status = PersistIntent(intent, resolved, diff_storage, *before);
        !status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("cannot record the snapshot intent in the agent state: ",
                                       status.message()));
    }
  }

  // CREATE
  Uuid id;
  const std::string create_context =
      absl::StrCat("create snapshot (diff storage ", diff_path, ", limit ",
                   diff_storage.limit_bytes, " bytes)");
  if (int err = control_->Create(diff_storage.limit_bytes / kSectorBytes, diff_path, &id);
      err != 0) {
    ForgetIntent(intent);
    return ErrnoStatus(err, create_context);
  }
  const std::string id_text = id.ToString();

  auto snapshot = std::make_shared<Snapshot>();
  snapshot->id = id;
  snapshot->diff_storage = diff_storage;
  for (const ResolvedDevice& device : resolved) {
    SnapshotDeviceState state;
    state.device = device.device;
    state.resolved_path = device.resolved;
    state.number = device.number;
    snapshot->devices.push_back(std::move(state));
  }

  auto rollback = [&](const absl::Status& error) {
    if (snapshot->watcher) {
      snapshot->watcher->set_expect_gone(true);
      snapshot->watcher->Stop();
    }
    if (int err = control_->Destroy(id); err != 0 && err != ENODEV) {
      // The pending record stays: the next start releases the snapshot.
      agent::LogWarning("blksnap", "rollback: destroying snapshot %s failed: %s (errno %d)", id_text.c_str(),
                 agent::ErrnoText(err).c_str(), err);
    } else {
      ForgetIntent(intent);
    }
    return absl::Status(error.code(), absl::StrCat(error.message(), " (snapshot ", id_text,
                                                   " was rolled back)"));
  };

  if (absl::Status status = RecordIntentId(intent, id); !status.ok()) {
    return rollback(absl::Status(
        status.code(), absl::StrCat("cannot record snapshot ", id_text, " in the agent state: ",
                                    status.message())));
  }

  // SNAPSHOTADD per device
  for (size_t i = 0; i < resolved.size(); ++i) {
    const std::string context =
        absl::StrCat("add ", resolved[i].device, " to snapshot ", id_text);
    const int err = filter_->SnapshotAdd((*trackers)[i]->ref(), ToBlksnapUuid(id));
    if (err == 0) continue;
    switch (err) {
      case EBUSY:
      case EALREADY:
        return rollback(ErrnoStatus(
            err, absl::StrCat(context, ": the device already belongs to another snapshot"),
            absl::StatusCode::kAlreadyExists));
      case ENOENT:
        return rollback(ErrnoStatus(
            err, absl::StrCat(context, ": the kernel has no tracker for it; call AttachTracker"),
            absl::StatusCode::kFailedPrecondition));
      case EPERM:
        return rollback(ErrnoStatus(
            err, absl::StrCat(context, ": refused (blk-integrity or inline-encryption device?)"),
            absl::StatusCode::kPermissionDenied));
      default:
        return rollback(ErrnoStatus(err, context));
    }
  }

  // Watch events from before the take on.
  StartWatcher(*snapshot);

  // TAKE
  if (int err = control_->Take(id); err != 0) {
    std::vector<std::string> names;
    for (const ResolvedDevice& device : resolved) names.push_back(device.device);
    return rollback(ErrnoStatus(
        err, absl::StrCat("take snapshot ", id_text, " of ", absl::StrJoin(names, ", "))));
  }

  // SNAPSHOTINFO per device: the image, and proof that the device really is in the snapshot.
  for (size_t i = 0; i < resolved.size(); ++i) {
    SnapshotDeviceState& state = snapshot->devices[i];
    blksnap_snapshotinfo info{};
    if (int err = filter_->SnapshotInfo((*trackers)[i]->ref(), &info); err != 0) {
      return rollback(ErrnoStatus(
          err, absl::StrCat("snapshot info of ", state.device, " in snapshot ", id_text)));
    }
    const std::string image_path = ImagePath(info);
    if (image_path.empty()) {
      return rollback(absl::FailedPreconditionError(absl::StrCat(
          state.device, " has no image after taking snapshot ", id_text,
          ": the kernel silently left it out (is the diff storage on it?)")));
    }
    const std::string expected =
        absl::StrCat("/dev/", ImageDiskName(choice_.flavour, state.number.major,
                                            state.number.minor));
    if (image_path != expected) {
      return rollback(absl::UnavailableError(absl::StrCat(
          "interface mismatch: the image of ", state.device, " is ", image_path,
          " but the ", FlavourName(choice_.flavour), " interface names it ", expected,
          "; the blksnap flavour was misdetected (force the right one)")));
    }
    state.image_path = image_path;
    state.error_code = info.error_code;
  }

  snapshot->created_unix_nanos = absl::ToUnixNanos(absl::Now());
  if (absl::Status status = PersistSnapshot(*snapshot); !status.ok()) {
    return rollback(absl::Status(
        status.code(), absl::StrCat("cannot record snapshot ", id_text, " in the agent state: ",
                                    status.message())));
  }
  SnapshotState result;
  result.id = id;
  result.devices = snapshot->devices;
  result.diff_storage = snapshot->diff_storage;
  result.known_to_agent = true;
  result.created_unix_nanos = snapshot->created_unix_nanos;
  for (const SnapshotDeviceState& device : result.devices) {
    if (device.error_code != 0) result.corrupted = true;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshots_[id_text] = std::move(snapshot);
  }
  return result;
}

void BlksnapBackend::RetireWatcher(std::unique_ptr<EventWatcher> watcher) {
  watcher->RequestStop();
  retired_watchers_.push_back(std::move(watcher));
  std::erase_if(retired_watchers_, [](const auto& w) { return w->finished(); });
}

absl::Status BlksnapBackend::ReleaseSnapshot(const Uuid& id) {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  std::lock_guard<std::mutex> ops(ops_mu_);
  const std::string id_text = id.ToString();
  std::shared_ptr<Snapshot> snapshot = FindSnapshot(id);
  if (snapshot && snapshot->watcher) snapshot->watcher->set_expect_gone(true);
  const int err = control_->Destroy(id);
  const bool gone = err == ENODEV || err == ENOENT || err == ESRCH;
  if (err != 0 && !gone) {
    if (snapshot && snapshot->watcher) snapshot->watcher->set_expect_gone(false);
    return ErrnoStatus(err, absl::StrCat("release snapshot ", id_text));
  }
  if (snapshot) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      snapshots_.erase(id_text);
    }
    if (snapshot->watcher) {
      snapshot->watcher->PublishReleasedOnce();
      RetireWatcher(std::move(snapshot->watcher));
    }
    ForgetSnapshotRecords({id_text});
  } else if (err == 0 && events_ != nullptr) {
    agent::SnapshotEvent event;
    event.snapshot_id = id;
    event.kind = agent::SnapshotEvent::Kind::kReleased;
    event.time_unix_nanos = absl::ToUnixNanos(absl::Now());
    events_->Publish(event);
  }
  if (gone) {
    return ErrnoStatus(err, absl::StrCat("release snapshot ", id_text, ": no such snapshot"),
                       absl::StatusCode::kNotFound);
  }
  return absl::OkStatus();
}

absl::StatusOr<SnapshotState> BlksnapBackend::GetSnapshot(const Uuid& id) {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  absl::StatusOr<std::vector<Uuid>> listed = Collect();
  if (!listed.ok()) return listed.status();
  const bool in_kernel = std::find(listed->begin(), listed->end(), id) != listed->end();
  std::shared_ptr<Snapshot> snapshot = FindSnapshot(id);
  if (!in_kernel && snapshot == nullptr) {
    return absl::NotFoundError(absl::StrCat("snapshot ", id.ToString(), " not found"));
  }
  if (in_kernel && snapshot != nullptr) {
    SnapshotState state = DescribeSnapshot(*snapshot);
    if (!HasGoneDevice(state)) return state;
  }
  std::lock_guard<std::mutex> ops(ops_mu_);
  return GetSnapshotLocked(id);
}

absl::StatusOr<SnapshotState> BlksnapBackend::GetSnapshotLocked(const Uuid& id) {
  absl::StatusOr<std::vector<Uuid>> listed = Collect();
  if (!listed.ok()) return listed.status();
  DropVanishedSnapshots(*listed);
  if (std::find(listed->begin(), listed->end(), id) == listed->end()) {
    return absl::NotFoundError(absl::StrCat("snapshot ", id.ToString(), " not found"));
  }
  std::shared_ptr<Snapshot> snapshot = FindSnapshot(id);
  return snapshot ? DescribeSnapshot(*snapshot) : UnknownSnapshot(id);
}

absl::StatusOr<std::vector<SnapshotState>> BlksnapBackend::ListSnapshots() {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  absl::StatusOr<std::vector<Uuid>> listed = Collect();
  if (!listed.ok()) return listed.status();
  std::vector<std::shared_ptr<Snapshot>> known;
  bool agree;
  {
    std::lock_guard<std::mutex> lock(mu_);
    agree = listed->size() == snapshots_.size();
    for (size_t i = 0; agree && i < listed->size(); ++i) {
      auto it = snapshots_.find((*listed)[i].ToString());
      agree = it != snapshots_.end();
      if (agree) known.push_back(it->second);
    }
  }
  std::vector<SnapshotState> states;
  for (size_t i = 0; agree && i < known.size(); ++i) {
    states.push_back(DescribeSnapshot(*known[i]));
    agree = !HasGoneDevice(states.back());
  }
  if (agree) return states;
  std::lock_guard<std::mutex> ops(ops_mu_);
  return ListSnapshotsLocked();
}

absl::StatusOr<std::vector<SnapshotState>> BlksnapBackend::ListSnapshotsLocked() {
  absl::StatusOr<std::vector<Uuid>> listed = Collect();
  if (!listed.ok()) return listed.status();
  DropVanishedSnapshots(*listed);
  std::vector<SnapshotState> states;
  for (const Uuid& id : *listed) {
    std::shared_ptr<Snapshot> snapshot = FindSnapshot(id);
    states.push_back(snapshot ? DescribeSnapshot(*snapshot) : UnknownSnapshot(id));
  }
  return states;
}

absl::StatusOr<CbtInfo> BlksnapBackend::GetCbtInfo(const std::string& device) {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  absl::StatusOr<std::shared_ptr<Tracked>> tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  blksnap_cbtinfo info{};
  const int err = filter_->CbtInfo((*tracked)->ref(), &info);
  if (IsTrackerGone(err)) {
    return ErrnoStatus(err,
                       absl::StrCat("CBT info of ", device,
                                    ": the kernel no longer tracks it; call AttachTracker"),
                       absl::StatusCode::kNotFound);
  }
  if (err == ESRCH) {
    return ErrnoStatus(err, absl::StrCat("CBT info of ", device, ": the tracker has no CBT"),
                       absl::StatusCode::kFailedPrecondition);
  }
  if (err != 0) return ErrnoStatus(err, absl::StrCat("CBT info of ", device));
  CbtInfo out;
  out.capacity_bytes = info.device_capacity;
  out.block_size = info.block_size;
  out.block_count = info.block_count;
  std::memcpy(out.generation_id.bytes.data(), info.generation_id.b,
              sizeof(info.generation_id.b));
  out.changes_number = info.changes_number;
  out.corrupted = false;
  return out;
}

absl::Status BlksnapBackend::ReadCbtMap(const std::string& device, uint64_t offset,
                                        uint64_t length, uint8_t* out) {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  absl::StatusOr<std::shared_ptr<Tracked>> tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  if (length == 0) return absl::OkStatus();
  if (out == nullptr) return absl::InvalidArgumentError("ReadCbtMap: no output buffer");
  auto out_of_range = [&](int err) {
    std::string blocks;
    blksnap_cbtinfo info{};
    if (filter_->CbtInfo((*tracked)->ref(), &info) == 0) {
      blocks = absl::StrCat(" of ", info.block_count, " blocks");
    }
    const std::string context =
        absl::StrCat("read CBT map of ", device, ": bytes [", offset, ", ", offset + length,
                     ") lie outside the map", blocks);
    return err != 0 ? ErrnoStatus(err, context, absl::StatusCode::kOutOfRange)
                    : absl::OutOfRangeError(context);
  };
  uint64_t end = 0;
  if (__builtin_add_overflow(offset, length, &end) || end > UINT32_MAX) return out_of_range(0);
  for (uint64_t done = 0; done < length;) {
    const uint64_t slice = std::min(kMapSliceBytes, length - done);
    const int err = filter_->CbtMap((*tracked)->ref(), static_cast<uint32_t>(offset + done),
                                    static_cast<uint32_t>(slice), out + done);
    if (err == ENODATA) return out_of_range(err);
    if (err == EFAULT) {
      return ErrnoStatus(err, absl::StrCat("read CBT map of ", device, ": CBT corrupted"),
                         absl::StatusCode::kDataLoss);
    }
    if (IsTrackerGone(err)) {
      return ErrnoStatus(err,
                         absl::StrCat("read CBT map of ", device,
                                      ": the kernel no longer tracks it; call AttachTracker"),
                         absl::StatusCode::kNotFound);
    }
    if (err != 0) return ErrnoStatus(err, absl::StrCat("read CBT map of ", device));
    done += slice;
  }
  return absl::OkStatus();
}

absl::Status BlksnapBackend::MarkDirty(const std::string& device,
                                       const std::vector<agent::SectorRange>& ranges) {
  if (absl::Status status = CheckRunning(); !status.ok()) return status;
  absl::StatusOr<std::shared_ptr<Tracked>> tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  // The kernel applies the ranges one by one and stops at the first bad one, leaving the
  // earlier ones applied: check them all first.
  blksnap_cbtinfo info{};
  if (int err = filter_->CbtInfo((*tracked)->ref(), &info); err != 0) {
    return ErrnoStatus(err, absl::StrCat("mark dirty on ", device, ": CBT info"),
                       IsTrackerGone(err) ? absl::StatusCode::kNotFound
                                          : agent::ErrnoToStatusCode(err));
  }
  const uint64_t capacity_sectors = info.device_capacity / kSectorBytes;
  std::vector<blksnap_sectors> sectors;
  sectors.reserve(ranges.size());
  for (const agent::SectorRange& range : ranges) {
    if (range.count == 0) continue;
    uint64_t end = 0;
    if (__builtin_add_overflow(range.sector, range.count, &end) || end > capacity_sectors) {
      return absl::OutOfRangeError(absl::StrCat(
          "mark dirty on ", device, ": sectors [", range.sector, ", +", range.count,
          ") lie outside the device (", capacity_sectors, " sectors)"));
    }
    sectors.push_back(blksnap_sectors{range.sector, range.count});
  }
  if (sectors.empty()) return absl::OkStatus();
  if (sectors.size() > UINT32_MAX) {
    return absl::InvalidArgumentError("mark dirty: too many ranges");
  }
  const int err = filter_->CbtDirty((*tracked)->ref(), sectors);
  if (err == EINVAL) {
    const blksnap_sectors& first = sectors.front();
    const blksnap_sectors& last = sectors.back();
    return ErrnoStatus(err,
                       absl::StrCat("mark dirty on ", device, ": a range in sectors [",
                                    first.offset, ", ", last.offset + last.count,
                                    ") lies outside the CBT map"),
                       absl::StatusCode::kOutOfRange);
  }
  if (IsTrackerGone(err)) {
    return ErrnoStatus(err,
                       absl::StrCat("mark dirty on ", device,
                                    ": the kernel no longer tracks it; call AttachTracker"),
                       absl::StatusCode::kNotFound);
  }
  return ErrnoStatus(err, absl::StrCat("mark dirty on ", device));
}

void BlksnapBackend::Shutdown() {
  if (shut_down_.exchange(true)) return;
  std::lock_guard<std::mutex> ops(ops_mu_);
  std::map<std::string, std::shared_ptr<Snapshot>> snapshots;
  std::map<std::string, std::shared_ptr<Tracked>> trackers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshots.swap(snapshots_);
    trackers.swap(trackers_);
  }
  // Ask every watcher first, then join: each may be inside one WAIT_EVENT.
  for (auto& [id, snapshot] : snapshots) {
    if (snapshot->watcher) snapshot->watcher->RequestStop();
  }
  for (auto& [id, snapshot] : snapshots) snapshot->watcher.reset();
  retired_watchers_.clear();
  // Descriptors close here (or when the last in-flight reader lets go of its tracker).
}

}  // namespace

absl::StatusOr<std::unique_ptr<cbt::agent::Backend>> NewBlksnapBackend(
    std::unique_ptr<Kernel> kernel, const BlksnapBackendOptions& options,
    cbt::agent::EventSink* events, cbt::agent::StateStore* state) {
  if (kernel == nullptr) return absl::InvalidArgumentError("NewBlksnapBackend: no kernel");
  absl::StatusOr<FlavourChoice> choice = DetectFlavour(*kernel, options.forced_flavour);
  if (!choice.ok()) return choice.status();
  auto backend = std::make_unique<BlksnapBackend>(std::move(kernel), std::move(*choice), options,
                                                  events, state);
  if (absl::Status status = backend->Init(); !status.ok()) return status;
  return backend;
}

}  // namespace cbt::blksnap
