// UblkDevice: one ublk device served by this process — the lifecycle glue between the control
// plane (UblkControl), the queues (UblkQueue, one thread each) and a Target.
//
// Create(): GET_FEATURES, ADD_DEV, SET_PARAMS (BASIC with VOLATILE_CACHE|FUA so FLUSH and FUA
// reach the target; DISCARD when asked), open /dev/ublkcN (it may appear, or be held by udev, a
// moment after ADD_DEV), start the queues, START_DEV from the calling thread.
// Recover(): for a device whose previous server died (USER_RECOVERY): START_USER_RECOVERY
// (retried while the old process is still going away), reopen /dev/ublkcN, start the queues,
// END_USER_RECOVERY. Requests queued while no server ran are then served; with
// USER_RECOVERY_REISSUE the ones the dead server held are re-issued too.
// Stop(): resume the queues, STOP_DEV, join them, close /dev/ublkcN. Delete(): DEL_DEV (after
// Stop). The destructor does both for a device still running, unless it was handed over.
//
// A process killed while serving leaves a USER_RECOVERY device QUIESCED (I/O waits) for
// Recover(); without USER_RECOVERY the kernel removes the disk.
#ifndef CBT_AGENT_UBLK_DEVICE_H_
#define CBT_AGENT_UBLK_DEVICE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ublk/control.h"
#include "ublk/queue.h"
#include "ublk/target.h"
#include "ublk/uapi.h"

namespace cbt::ublk {

struct UblkDeviceOptions {
  uint64_t capacity_sectors = 0;     // required; a multiple of the logical block
  uint32_t logical_block_shift = 9;  // 9 ..= 12
  uint32_t physical_block_shift = 12;
  uint16_t queue_count = 1;  // one queue did better than two on 2 vCPUs
  uint16_t queue_depth = 64;
  // Per request; page multiple, <= 32 MiB. Each queue has one buffer of this size per tag
  // (depth x max_io_bytes of address space, locked as it is touched). 1 MiB: a 1 MiB write is
  // one request, not two (+10% of sequential throughput, docs/BENCHMARKS.md).
  uint32_t max_io_bytes = 1 << 20;
  bool user_recovery = true;          // survive the server's death (Recover)
  bool recovery_reissue = true;       // ... re-issuing what it held (when the driver has it)
  bool volatile_cache = true;         // VOLATILE_CACHE|FUA attributes: FLUSH and FUA are sent
  bool read_only = false;
  bool rotational = false;
  // DISCARD parameters; the type is sent when any of these is nonzero. A zero granularity
  // becomes the logical block size.
  uint32_t discard_granularity = 0;
  uint32_t discard_alignment = 0;
  uint32_t max_discard_sectors = 0;       // 0: no discard
  uint32_t max_write_zeroes_sectors = 0;  // 0: no write-zeroes
  // The disk's I/O scheduler, written to /sys/block/ublkbN/queue/scheduler once START_DEV made
  // the disk ("" keeps the kernel's choice, mq-deadline for a one-queue disk). The devices this
  // agent serves forward to a device that schedules its own I/O, so the default is "none":
  // mq-deadline on the proxy cost ~15% of the 4 KiB random IOPS (docs/BENCHMARKS.md). A failure
  // to set it is logged, not fatal.
  std::string io_scheduler = "none";
  uint32_t dev_id = kAnyDeviceId;
  std::string control_path = kControlDevicePath;
  absl::Duration char_device_timeout = absl::Seconds(10);  // for /dev/ublkcN to open
};

struct UblkRecoverOptions {
  std::string control_path = kControlDevicePath;
  // START_USER_RECOVERY answers EBUSY until the old server's /dev/ublkcN is released and the
  // device is QUIESCED; retried this long.
  absl::Duration busy_timeout = absl::Seconds(30);
  absl::Duration char_device_timeout = absl::Seconds(10);
};

absl::Status ValidateDeviceOptions(const UblkDeviceOptions& options);
// The ADD_DEV request for `options`, given the GET_FEATURES mask (0 = unknown).
ublksrv_ctrl_dev_info BuildDeviceInfo(const UblkDeviceOptions& options, uint64_t features);
// The SET_PARAMS payload for `options` on a device with this (kernel-rounded) buffer size.
ublk_params BuildParams(const UblkDeviceOptions& options, uint32_t max_io_buf_bytes);

class UblkDevice {
 public:
  // `target` must outlive the device.
  static absl::StatusOr<std::unique_ptr<UblkDevice>> Create(const UblkDeviceOptions& options,
                                                            Target* target);
  static absl::StatusOr<std::unique_ptr<UblkDevice>> Recover(
      uint32_t dev_id, Target* target, const UblkRecoverOptions& options = {});
  // Stop() and Delete() if still running.
  ~UblkDevice();
  UblkDevice(const UblkDevice&) = delete;
  UblkDevice& operator=(const UblkDevice&) = delete;

  absl::Status Stop();
  // Stops first if needed.
  absl::Status Delete();
  // Leaves a USER_RECOVERY device to the next server (agent upgrade or restart): the queue
  // threads end and /dev/ublkcN is closed without STOP_DEV, so the kernel quiesces the device
  // and requeues what was held; the destructor then leaves it alone. Quiesce() first so that no
  // request is half-served. FailedPrecondition for a device without USER_RECOVERY.
  absl::Status HandOver();

  // Every queue: no request in the target, new ones held (see UblkQueue). On failure (timeout)
  // every queue is resumed.
  absl::Status Quiesce(absl::Duration timeout = absl::InfiniteDuration());
  void Resume();

  // Waits until /dev/ublkbN exists as a block device node.
  absl::Status WaitForBlockDevice(absl::Duration timeout) const;

  uint32_t id() const { return info_.dev_id; }
  std::string block_device_path() const;
  std::string char_device_path() const;
  uint64_t features() const { return features_; }  // GET_FEATURES mask, 0 = unknown
  uint64_t flags() const { return info_.flags; }   // negotiated device flags
  const ublksrv_ctrl_dev_info& info() const { return info_; }
  const ublk_params& params() const { return params_; }
  UblkControl& control() { return *control_; }

 private:
  enum class State { kAdded, kRunning, kStopped, kDeleted };

  UblkDevice(std::unique_ptr<UblkControl> control, Target* target, uint64_t features,
             const ublksrv_ctrl_dev_info& info)
      : control_(std::move(control)), target_(target), features_(features), info_(info) {}

  absl::Status OpenCharDevice(absl::Duration timeout);
  absl::Status StartQueues();
  // Ends the queue threads without STOP_DEV and closes /dev/ublkcN (failed Create/Recover).
  void AbandonQueues();

  std::unique_ptr<UblkControl> control_;
  Target* const target_;
  const uint64_t features_;
  ublksrv_ctrl_dev_info info_;
  ublk_params params_{};
  std::mutex mu_;  // Stop/Delete/Quiesce
  State state_ = State::kAdded;
  int char_fd_ = -1;
  std::vector<std::unique_ptr<UblkQueue>> queues_;
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_DEVICE_H_
