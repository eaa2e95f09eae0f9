// Internal: the class behind NewUblkBackend (ublk_backend.h), split over ublk_backend.cc
// (start, trackers, CBT, stop) and ublk_snapshots.cc (snapshots).
//
// Locking: ops_mu_ serializes operations that change trackers or snapshots (they may wait for
// I/O to drain or file systems to freeze); mu_ guards the tables only and is held briefly, so
// CBT reads never wait behind a take. Trackers are shared_ptr: a reader keeps one alive while a
// concurrent detach removes it from the table.
#ifndef CBT_AGENT_UBLK_BACKEND_UBLK_BACKEND_IMPL_H_
#define CBT_AGENT_UBLK_BACKEND_UBLK_BACKEND_IMPL_H_

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ublk/backend/image_target.h"
#include "ublk/backend/ublk_backend.h"
#include "ublk/control.h"
#include "ublk/cow/diff_storage.h"

namespace cbt::ublk {

struct SnapshotMember {
  std::shared_ptr<TrackedDevice> tracked;
  std::unique_ptr<CowStore> store;
  std::unique_ptr<ImageTarget> target;
  std::unique_ptr<UblkDevice> image;
  std::string image_path;
  std::atomic<int> error{0};  // negative errno once the store is corrupted
};

struct UblkSnapshot {
  Uuid id;
  agent::DiffStorageSpec diff_storage;
  std::shared_ptr<DiffStorage> storage;
  int64_t created_unix_nanos = 0;
  std::vector<std::unique_ptr<SnapshotMember>> members;
};

class UblkBackend final : public agent::Backend {
 public:
  UblkBackend(const UblkBackendOptions& options, std::unique_ptr<UblkControl> control,
              uint64_t features, agent::EventSink* events, agent::StateStore* state);
  ~UblkBackend() override;

  // Startup: image devices of crashed snapshots, then the recorded trackers.
  void RecoverFromState();

  agent::BackendDescription Describe() const override;
  absl::StatusOr<agent::TrackerState> AttachTracker(const std::string& device,
                                                    bool* already_attached) override;
  absl::Status DetachTracker(const std::string& device) override;
  absl::StatusOr<agent::TrackerState> GetTracker(const std::string& device) override;
  absl::StatusOr<std::vector<agent::TrackerState>> ListTrackers() override;
  absl::StatusOr<agent::SnapshotState> CreateSnapshot(
      const std::vector<std::string>& devices,
      const agent::DiffStorageSpec& diff_storage) override;
  absl::Status ReleaseSnapshot(const Uuid& id) override;
  absl::StatusOr<agent::SnapshotState> GetSnapshot(const Uuid& id) override;
  absl::StatusOr<std::vector<agent::SnapshotState>> ListSnapshots() override;
  absl::StatusOr<CbtInfo> GetCbtInfo(const std::string& device) override;
  absl::Status ReadCbtMap(const std::string& device, uint64_t offset, uint64_t length,
                          uint8_t* out) override;
  absl::Status MarkDirty(const std::string& device,
                         const std::vector<agent::SectorRange>& ranges) override;
  void Shutdown() override;

 private:
  // realpath + must be a block device.
  absl::StatusOr<OriginDevice> Resolve(const std::string& device) const;
  // NotFound "<device> is not tracked" when it is not.
  absl::StatusOr<std::shared_ptr<TrackedDevice>> RequireTracker(const std::string& device) const;
  std::shared_ptr<TrackedDevice> FindTracker(const std::string& resolved) const;
  agent::TrackerState DescribeTracker(const TrackedDevice& tracked) const;  // mu_ held
  agent::SnapshotState DescribeSnapshot(const UblkSnapshot& snapshot) const;
  // True when `number` is (a partition of) a proxy or image this agent serves.
  bool IsServedDevice(dev_t number) const;  // mu_ held

  absl::Status PersistTracker(const TrackedDevice& tracked);
  void ForgetTracker(const std::string& resolved);
  absl::Status PersistSnapshot(const UblkSnapshot& snapshot);
  void ForgetSnapshot(const std::string& id);
  void PublishReleased(const Uuid& id);

  // Snapshot steps (ublk_snapshots.cc).
  absl::StatusOr<std::vector<std::shared_ptr<TrackedDevice>>> SnapshotDevices(
      const std::vector<std::string>& devices);
  absl::Status CheckDiffStorageLocation(const DiffStorage& storage);
  absl::Status TakeSnapshot(UblkSnapshot& snapshot);
  absl::Status StartImages(UblkSnapshot& snapshot);
  // Removes images, stops copy-on-write and frees the stores; members already done are skipped,
  // so a failed release can be retried.
  absl::Status ReleaseMembers(UblkSnapshot& snapshot);

  const UblkBackendOptions options_;
  const std::unique_ptr<UblkControl> control_;
  const uint64_t features_;
  agent::EventSink* const events_;
  agent::StateStore* const state_;

  std::mutex ops_mu_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<TrackedDevice>> trackers_;  // by resolved path
  std::map<std::string, std::unique_ptr<UblkSnapshot>> snapshots_;  // by id text
  bool shut_down_ = false;
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_BACKEND_UBLK_BACKEND_IMPL_H_
