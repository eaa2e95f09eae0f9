// TrackedDevice: one device under CBT with the ublk backend — the origin (opened O_DIRECT through
// a FileTarget, plus an O_EXCL claim so nobody can mount it behind the proxy's back), its CBT
// map, and the proxy /dev/ublkbN that applications use.
//
// Every WRITE, WRITE_ZEROES and DISCARD on the proxy passes BeforeWrite() before it reaches the
// origin - on its queue thread, or on a preparation thread when a chunk must be copied first
// (WritePreparer). There the chunks it touches are preserved for a held snapshot (copy-on-write)
// and the CBT map is marked. Neither may fail the write: a snapshot that cannot preserve is
// corrupted instead (CowStore), and a map that cannot be marked is corrupted and reports
// DataLoss until the next take resets it.
//
// Snapshot steps (the backend calls them in order, for all devices of a snapshot):
//   Quiesce()             no write in flight, new ones held
//   cbt_map().Switch(), StartCopyOnWrite(store)
//   Resume()
// and, to release, StopCopyOnWrite() (which quiesces by itself) before the store is destroyed.
//
// Thread safety: the control methods are called by the backend under its own lock.
#ifndef CBT_AGENT_UBLK_BACKEND_TRACKED_DEVICE_H_
#define CBT_AGENT_UBLK_BACKEND_TRACKED_DEVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "backend/backend.h"
#include "core/cbt_map.h"
#include "ublk/cow/cow_store.h"
#include "ublk/device.h"
#include "ublk/file_target.h"

namespace cbt::ublk {

struct ProxyOptions {
  std::string control_path = kControlDevicePath;
  uint16_t queue_count = 1;
  uint16_t queue_depth = 64;
  uint32_t max_io_bytes = 1 << 20;  // as UblkDeviceOptions (docs/BENCHMARKS.md)
  absl::Duration block_device_timeout = absl::Seconds(10);
};

struct OriginDevice {
  std::string device;         // as the caller named it
  std::string resolved_path;  // realpath
  agent::DeviceNumber number;
};

class TrackedDevice final : private WriteObserver {
 public:
  // Opens the origin (a block device; FailedPrecondition "in use" when it is mounted or held
  // exclusively), then serves it through a new proxy device — or, with `recover_dev_id`, takes
  // over that existing USER_RECOVERY proxy left by a previous agent. `map` is the CBT map to
  // continue (nullptr: a new one, new generation).
  static absl::StatusOr<std::unique_ptr<TrackedDevice>> Open(
      const OriginDevice& origin, std::unique_ptr<CbtMap> map,
      std::optional<uint32_t> recover_dev_id, const ProxyOptions& options);

  // Stops and deletes the proxy (STOP_DEV + DEL_DEV) if it still runs.
  ~TrackedDevice() override;
  TrackedDevice(const TrackedDevice&) = delete;
  TrackedDevice& operator=(const TrackedDevice&) = delete;

  // Origin geometry for a new proxy or image of the same shape.
  UblkDeviceOptions DeviceShape() const;

  absl::Status Quiesce(absl::Duration timeout) { return device_->Quiesce(timeout); }
  void Resume() { device_->Resume(); }
  // Call while quiesced. `store` must outlive StopCopyOnWrite().
  void StartCopyOnWrite(CowStore* store) { cow_.store(store, std::memory_order_release); }
  // Quiesces, detaches the store, resumes: afterwards no queue thread uses it.
  absl::Status StopCopyOnWrite(absl::Duration timeout);

  // FailedPrecondition when the proxy is open exclusively (mounted, or held by a program).
  absl::Status CheckProxyNotInUse() const;
  // Removes the proxy (STOP_DEV + DEL_DEV).
  absl::Status Remove();
  // Clean stop: quiesce, then leave the proxy to the next agent (UblkDevice::HandOver). Returns
  // the CBT map as it stands once no write can change it any more.
  absl::StatusOr<CbtMapState> HandOver(absl::Duration timeout);
  // The same without draining I/O first and without the map, for a stop that cannot save it.
  absl::Status HandOverWithoutMap() { return device_->HandOver(); }

  const OriginDevice& origin() const { return origin_; }
  CbtMap& cbt_map() { return *map_; }
  int origin_fd() const { return target_->fd(); }
  uint64_t capacity_bytes() const { return target_->backing().size_bytes; }
  uint32_t proxy_id() const { return device_->id(); }
  std::string io_path() const { return device_->block_device_path(); }
  // The proxy's block device number (from /dev/ublkbN).
  agent::DeviceNumber proxy_number() const { return proxy_number_; }
  const UblkDevice& proxy() const { return *device_; }
  uint64_t untracked_writes() const { return mark_failures_.load(std::memory_order_relaxed); }

 private:
  TrackedDevice(OriginDevice origin, const ProxyOptions& options, int claim_fd,
                std::unique_ptr<FileTarget> target, std::unique_ptr<CbtMap> map)
      : origin_(std::move(origin)),
        options_(options),
        claim_fd_(claim_fd),
        target_(std::move(target)),
        map_(std::move(map)) {}

  int BeforeWrite(uint64_t offset, uint64_t length) override;
  // True while a held snapshot still has to preserve a chunk of the range: the write then waits
  // for its copy on a preparation thread, not on the queue thread.
  bool BeforeWriteMayBlock(uint64_t offset, uint64_t length) override;

  const OriginDevice origin_;
  const ProxyOptions options_;
  const int claim_fd_;  // O_EXCL on the origin, held for the tracker's life
  std::unique_ptr<FileTarget> target_;
  std::unique_ptr<CbtMap> map_;
  std::unique_ptr<UblkDevice> device_;
  agent::DeviceNumber proxy_number_;
  std::atomic<CowStore*> cow_{nullptr};
  std::atomic<uint64_t> mark_failures_{0};
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_BACKEND_TRACKED_DEVICE_H_
