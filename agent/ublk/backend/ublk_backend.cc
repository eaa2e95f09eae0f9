#include "ublk/backend/ublk_backend.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <climits>
#include <cstdlib>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "backend/errno_status.h"
#include "backend/log.h"
#include "ublk/backend/fs_freeze.h"
#include "ublk/backend/saved_cbt_map.h"
#include "ublk/backend/ublk_backend_impl.h"

namespace cbt::ublk {

using agent::ErrnoStatus;
using agent::LogInfo;
using agent::LogWarning;

namespace {

constexpr char kBackendName[] = "ublk";

bool ProcessAlive(int pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace

absl::StatusOr<std::unique_ptr<agent::Backend>> NewUblkBackend(const UblkBackendOptions& options,
                                                               agent::EventSink* events,
                                                               agent::StateStore* state) {
  struct stat st;
  if (stat(options.proxy.control_path.c_str(), &st) != 0) {
    return ErrnoStatus(errno,
                       absl::StrCat(options.proxy.control_path,
                                    " (the ublk_drv module is not loaded: modprobe ublk_drv)"),
                       absl::StatusCode::kNotFound);
  }
  auto control = UblkControl::Open(options.proxy.control_path);
  if (!control.ok()) return control.status();
  auto features = (*control)->GetFeatures();
  if (!features.ok()) return features.status();
  auto backend = std::make_unique<UblkBackend>(options, std::move(*control), *features, events,
                                               state);
  backend->RecoverFromState();
  return backend;
}

UblkBackend::UblkBackend(const UblkBackendOptions& options, std::unique_ptr<UblkControl> control,
                         uint64_t features, agent::EventSink* events, agent::StateStore* state)
    : options_(options),
      control_(std::move(control)),
      features_(features),
      events_(events),
      state_(state) {}

UblkBackend::~UblkBackend() {
  // Without Shutdown() (tests, failed start): images and proxies are removed by their
  // destructors; snapshots go first, their stores reference the trackers.
  for (auto& [id, snapshot] : snapshots_) (void)ReleaseMembers(*snapshot);
}

void UblkBackend::RecoverFromState() {
  if (state_ == nullptr) return;
  cbtagent::state::AgentState state = state_->Get();
  if (state.backend() != kBackendName &&
      (state.trackers_size() > 0 || state.snapshots_size() > 0)) {
    LogWarning("ublk", "state of the '%s' backend ignored: trackers must be attached again",
               state.backend().c_str());
    state.Clear();
  }
  state.set_backend(kBackendName);
  // Snapshot images of a crashed agent: their copy-on-write state died with it.
  for (const auto& record : state.snapshots()) {
    for (uint32_t image : record.ublk_image_dev_ids()) {
      ublksrv_ctrl_dev_info info;
      if (!control_->GetDeviceInfo(image, &info).ok()) continue;
      if (absl::Status s = control_->DeleteDevice(image); !s.ok()) {
        LogWarning("ublk", "orphan image /dev/ublkb%u of snapshot %s: %s", image,
                   record.id().c_str(), s.ToString().c_str());
      }
    }
    LogWarning("ublk",
               "snapshot %s did not survive the agent restart (ublk snapshots live in the "
               "agent's memory); released it, its image devices are removed",
               record.id().c_str());
  }
  state.clear_snapshots();

  auto records = state.trackers();
  state.clear_trackers();
  for (const auto& record : records) {
    OriginDevice origin;
    origin.device = record.device();
    origin.resolved_path = record.resolved_path();
    origin.number = {(record.major)(), (record.minor)()};  // () keeps sysmacros away
    struct stat st;
    const bool present = stat(origin.resolved_path.c_str(), &st) == 0 && S_ISBLK(st.st_mode) &&
                         major(st.st_rdev) == origin.number.major &&
                         minor(st.st_rdev) == origin.number.minor;
    std::optional<uint32_t> recover;
    if (record.has_ublk_dev_id()) {
      ublksrv_ctrl_dev_info info;
      const uint32_t id = record.ublk_dev_id();
      if (control_->GetDeviceInfo(id, &info).ok()) {
        if (info.state == kDevStateLive && ProcessAlive(info.ublksrv_pid) &&
            info.ublksrv_pid != getpid()) {
          LogWarning("ublk", "/dev/ublkb%u of %s is served by process %d; not taken over", id,
                     origin.resolved_path.c_str(), info.ublksrv_pid);
          continue;
        }
        if (!present) {
          LogWarning("ublk", "%s is gone; removing its proxy /dev/ublkb%u",
                     origin.resolved_path.c_str(), id);
          (void)control_->DeleteDevice(id);
          continue;
        }
        recover = id;
      }
    }
    if (!present) {
      LogWarning("ublk", "tracked device %s is gone; tracker dropped", origin.resolved_path.c_str());
      continue;
    }
    std::unique_ptr<CbtMap> map;
    SavedCbtMapOwner owner{origin.resolved_path, origin.number, record.ublk_dev_id()};
    absl::StatusOr<CbtMapState> saved = TakeSavedCbtMap(state_->directory(), owner);
    if (recover.has_value() && saved.ok()) {
      auto restored = CbtMap::FromState(std::move(*saved));
      if (restored.ok()) map = std::move(*restored);
      else LogWarning("ublk", "saved CBT map of %s: %s", origin.resolved_path.c_str(),
                      restored.status().ToString().c_str());
    } else if (recover.has_value() && absl::IsNotFound(saved.status())) {
      LogWarning("ublk", "%s: the previous agent did not stop cleanly; CBT starts a new "
                 "generation (a full backup is required)", origin.resolved_path.c_str());
    } else if (!recover.has_value()) {
      LogWarning("ublk", "%s: its proxy did not survive (node restart?); a new proxy is made "
                 "and CBT starts a new generation", origin.resolved_path.c_str());
    } else {
      LogWarning("ublk", "%s", saved.status().ToString().c_str());
    }
    auto tracked = TrackedDevice::Open(origin, std::move(map), recover, options_.proxy);
    if (!tracked.ok()) {
      LogWarning("ublk", "tracker of %s not restored: %s", origin.resolved_path.c_str(),
                 tracked.status().ToString().c_str());
      continue;
    }
    LogInfo("ublk", "%s %s as %s (CBT generation %s, changes number %u)",
            recover.has_value() ? "recovered" : "re-created", origin.resolved_path.c_str(),
            (*tracked)->io_path().c_str(),
            (*tracked)->cbt_map().Info().generation_id.ToString().c_str(),
            (*tracked)->cbt_map().Info().changes_number);
    auto* out = state.add_trackers();
    *out = record;
    out->set_ublk_dev_id((*tracked)->proxy_id());
    trackers_[origin.resolved_path] = std::move(*tracked);
  }
  if (absl::Status s = state_->Put(state); !s.ok()) {
    LogWarning("ublk", "saving the state: %s", s.ToString().c_str());
  }
}

agent::BackendDescription UblkBackend::Describe() const {
  agent::BackendDescription d;
  d.kind = agent::BackendKind::kUblk;
  d.reason = absl::StrCat(options_.selection_reason.empty() ? "" : options_.selection_reason,
                          options_.selection_reason.empty() ? "" : "; ",
                          "ublk: ", options_.proxy.control_path,
                          " exists (ublk_drv loaded); the agent serves tracked devices as "
                          "/dev/ublkbN proxies with CBT and copy-on-write snapshots");
  d.ublk_features = features_;
  d.user_recovery = true;
  d.ioctl_encoded_commands = control_->encoding() == CommandEncoding::kIoctl;
  d.chunk_size_bytes = static_cast<uint32_t>(options_.chunk_size);
  return d;
}

absl::StatusOr<OriginDevice> UblkBackend::Resolve(const std::string& device) const {
  if (device.empty() || device[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("device path '", device, "' must be an absolute path"));
  }
  char resolved[PATH_MAX];
  if (realpath(device.c_str(), resolved) == nullptr) {
    return ErrnoStatus(errno, absl::StrCat("device ", device));
  }
  struct stat st;
  if (stat(resolved, &st) != 0) return ErrnoStatus(errno, absl::StrCat("device ", device));
  if (!S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(device, " is not a block device"));
  }
  OriginDevice origin;
  origin.device = device;
  origin.resolved_path = resolved;
  origin.number = {major(st.st_rdev), minor(st.st_rdev)};
  return origin;
}

std::shared_ptr<TrackedDevice> UblkBackend::FindTracker(const std::string& resolved) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = trackers_.find(resolved);
  return it == trackers_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<TrackedDevice>> UblkBackend::RequireTracker(
    const std::string& device) const {
  absl::StatusOr<OriginDevice> origin = Resolve(device);
  if (!origin.ok()) {
    // A tracked device that disappeared (unplugged, dm device removed) is still found by the
    // path it was attached with or resolved to, so that it can be inspected and detached.
    if (absl::IsNotFound(origin.status())) {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [path, tracked] : trackers_) {
        if (tracked->origin().device == device || path == device) return tracked;
      }
    }
    return origin.status();
  }
  std::shared_ptr<TrackedDevice> tracked = FindTracker(origin->resolved_path);
  if (tracked == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(device, " is not tracked; call AttachTracker first"));
  }
  return tracked;
}

bool UblkBackend::IsServedDevice(dev_t number) const {
  const dev_t disk = WholeDiskOf(number);
  auto same = [&](const agent::DeviceNumber& n) { return makedev(n.major, n.minor) == disk; };
  for (const auto& [path, tracked] : trackers_) {
    if (same(tracked->proxy_number())) return true;
  }
  for (const auto& [id, snapshot] : snapshots_) {
    for (const auto& member : snapshot->members) {
      struct stat st;
      if (member->image != nullptr && stat(member->image_path.c_str(), &st) == 0 &&
          WholeDiskOf(st.st_rdev) == disk) {
        return true;
      }
    }
  }
  return false;
}

agent::TrackerState UblkBackend::DescribeTracker(const TrackedDevice& tracked) const {
  agent::TrackerState t;
  t.device = tracked.origin().device;
  t.resolved_path = tracked.origin().resolved_path;
  t.number = tracked.origin().number;
  t.capacity_bytes = tracked.capacity_bytes();
  t.io_path = tracked.io_path();
  for (const auto& [id, snapshot] : snapshots_) {
    for (const auto& member : snapshot->members) {
      if (member->tracked.get() == &tracked) {
        t.snapshot_id = id;
        t.image_path = member->image_path;
      }
    }
  }
  return t;
}

absl::StatusOr<agent::TrackerState> UblkBackend::AttachTracker(const std::string& device,
                                                               bool* already_attached) {
  *already_attached = false;
  std::lock_guard<std::mutex> ops(ops_mu_);
  absl::StatusOr<OriginDevice> origin = Resolve(device);
  if (!origin.ok()) return origin.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = trackers_.find(origin->resolved_path); it != trackers_.end()) {
      *already_attached = true;
      return DescribeTracker(*it->second);
    }
    if (IsServedDevice(makedev(origin->number.major, origin->number.minor))) {
      return absl::InvalidArgumentError(absl::StrCat(
          device, " is a proxy or snapshot image this agent serves; track the real device"));
    }
  }
  auto tracked = TrackedDevice::Open(*origin, nullptr, std::nullopt, options_.proxy);
  if (!tracked.ok()) return tracked.status();
  if (absl::Status s = PersistTracker(**tracked); !s.ok()) {
    (void)(*tracked)->Remove();
    return s;
  }
  LogInfo("ublk", "tracking %s through %s", origin->resolved_path.c_str(),
          (*tracked)->io_path().c_str());
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<TrackedDevice> shared = std::move(*tracked);
  trackers_[origin->resolved_path] = shared;
  return DescribeTracker(*shared);
}

absl::Status UblkBackend::DetachTracker(const std::string& device) {
  std::lock_guard<std::mutex> ops(ops_mu_);
  auto tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    agent::TrackerState t = DescribeTracker(**tracked);
    if (!t.snapshot_id.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          device, " belongs to snapshot ", t.snapshot_id, "; release the snapshot first"));
    }
  }
  if (absl::Status s = (*tracked)->CheckProxyNotInUse(); !s.ok()) return s;
  if (absl::Status s = (*tracked)->Remove(); !s.ok()) return s;
  const std::string resolved = (*tracked)->origin().resolved_path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    trackers_.erase(resolved);
  }
  ForgetTracker(resolved);
  LogInfo("ublk", "stopped tracking %s", resolved.c_str());
  return absl::OkStatus();
}

absl::StatusOr<agent::TrackerState> UblkBackend::GetTracker(const std::string& device) {
  auto tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  std::lock_guard<std::mutex> lock(mu_);
  return DescribeTracker(**tracked);
}

absl::StatusOr<std::vector<agent::TrackerState>> UblkBackend::ListTrackers() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<agent::TrackerState> out;
  for (const auto& [path, tracked] : trackers_) out.push_back(DescribeTracker(*tracked));
  return out;
}

absl::StatusOr<CbtInfo> UblkBackend::GetCbtInfo(const std::string& device) {
  auto tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  return (*tracked)->cbt_map().Info();
}

absl::Status UblkBackend::ReadCbtMap(const std::string& device, uint64_t offset,
                                     uint64_t length, uint8_t* out) {
  auto tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  return (*tracked)->cbt_map().ReadMap(offset, length, out);
}

absl::Status UblkBackend::MarkDirty(const std::string& device,
                                    const std::vector<agent::SectorRange>& ranges) {
  auto tracked = RequireTracker(device);
  if (!tracked.ok()) return tracked.status();
  const uint64_t capacity = (*tracked)->capacity_bytes() >> 9;
  // All or nothing: a bad range marks nothing.
  for (const agent::SectorRange& r : ranges) {
    if (r.sector >= capacity || r.count > capacity - r.sector) {
      return absl::OutOfRangeError(absl::StrCat("range of ", r.count, " sectors at sector ",
                                                r.sector, " lies past the end of ", device,
                                                " (", capacity, " sectors)"));
    }
  }
  for (const agent::SectorRange& r : ranges) {
    if (absl::Status s = (*tracked)->cbt_map().SetBoth(r.sector, r.count); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status UblkBackend::PersistTracker(const TrackedDevice& tracked) {
  if (state_ == nullptr) return absl::OkStatus();
  return state_->Update([&](cbtagent::state::AgentState& state) {
    state.set_backend(kBackendName);
    auto* record = state.add_trackers();
    record->set_device(tracked.origin().device);
    record->set_resolved_path(tracked.origin().resolved_path);
    record->set_major(tracked.origin().number.major);
    record->set_minor(tracked.origin().number.minor);
    record->set_ublk_dev_id(tracked.proxy_id());
  });
}

void UblkBackend::ForgetTracker(const std::string& resolved) {
  if (state_ == nullptr) return;
  absl::Status s = state_->Update([&](cbtagent::state::AgentState& state) {
    auto* trackers = state.mutable_trackers();
    for (int i = trackers->size() - 1; i >= 0; --i) {
      if (trackers->Get(i).resolved_path() == resolved) trackers->DeleteSubrange(i, 1);
    }
  });
  if (!s.ok()) LogWarning("ublk", "saving the state: %s", s.ToString().c_str());
}

void UblkBackend::Shutdown() {
  std::lock_guard<std::mutex> ops(ops_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  std::map<std::string, std::unique_ptr<UblkSnapshot>> snapshots;
  std::map<std::string, std::shared_ptr<TrackedDevice>> trackers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshots.swap(snapshots_);
    trackers.swap(trackers_);
  }
  for (auto& [id, snapshot] : snapshots) {
    if (absl::Status s = ReleaseMembers(*snapshot); !s.ok()) {
      LogWarning("ublk", "releasing snapshot %s at stop: %s", id.c_str(), s.ToString().c_str());
    }
    ForgetSnapshot(id);
    PublishReleased(snapshot->id);
    LogInfo("ublk", "snapshot %s released at stop (ublk snapshots live in the agent)",
            id.c_str());
  }
  // Saving a map into a directory that lives on a proxy would wait forever for the proxy
  // this very loop quiesces; such a stop saves nothing (the next start begins new generations).
  bool state_on_proxy = false;
  if (struct stat st; state_ != nullptr && stat(state_->directory().c_str(), &st) == 0) {
    for (const auto& [resolved, tracked] : trackers) {
      const agent::DeviceNumber n = tracked->proxy_number();
      if (WholeDiskOf(st.st_dev) == makedev(n.major, n.minor)) state_on_proxy = true;
    }
  }
  if (state_on_proxy) {
    LogWarning("ublk", "the state directory %s is on a device this agent serves; CBT maps are "
               "not saved (keep it off tracked devices)", state_->directory().c_str());
  }
  for (auto& [resolved, tracked] : trackers) {
    if (state_ == nullptr) continue;  // nobody could take the proxy over: removed below
    if (state_on_proxy) {
      if (absl::Status s = tracked->HandOverWithoutMap(); !s.ok()) {
        LogWarning("ublk", "handing %s over: %s", tracked->io_path().c_str(),
                   s.ToString().c_str());
      }
      continue;
    }
    absl::StatusOr<CbtMapState> map = tracked->HandOver(options_.quiesce_timeout);
    if (!map.ok()) {
      LogWarning("ublk", "handing %s over: %s; the proxy is removed", tracked->io_path().c_str(),
                 map.status().ToString().c_str());
      continue;
    }
    SavedCbtMapOwner owner{resolved, tracked->origin().number, tracked->proxy_id()};
    if (absl::Status s = SaveCbtMap(state_->directory(), owner, *map); !s.ok()) {
      LogWarning("ublk", "saving the CBT map of %s: %s; the next start begins a new generation",
                 resolved.c_str(), s.ToString().c_str());
      continue;
    }
    LogInfo("ublk", "%s left for the next agent with its CBT map saved", tracked->io_path().c_str());
  }
  trackers.clear();  // proxies handed over stay; any other is stopped and deleted
}

}  // namespace cbt::ublk
