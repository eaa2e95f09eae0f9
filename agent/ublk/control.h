// UblkControl: the ublk control plane — /dev/ublk-control and its commands, sent as
// IORING_OP_URING_CMD on a private ring with 128-byte SQEs (the 32-byte ublksrv_ctrl_cmd does
// not fit a normal SQE; without SQE128 the driver answers EINVAL).
//
// Commands are sent one at a time (a mutex serializes them), and each call blocks until the
// kernel answers. Some answers take long by design: START_DEV and END_USER_RECOVERY wait until
// every tag of every queue has been fetched, so they must come from a thread that is not a
// queue thread, after the queues queued their FETCH_REQs; DEL_DEV waits until /dev/ublkcN is
// closed and the queue rings are gone.
//
// Encoding: commands go out ioctl-encoded (6.4+). ADD_DEV and GET_DEV_INFO — the first command
// a server sends for a new or a recovered device — fall back to the legacy number when the
// encoded one is refused with EOPNOTSUPP/EINVAL, and if the legacy form works every later
// command is sent legacy too. GET_FEATURES exists only encoded (6.5+).
//
// Errors: "<COMMAND> on ublk device N: <strerror> (errno E)" with the code of
// agent/backend/errno_status.h.
#ifndef CBT_AGENT_UBLK_CONTROL_H_
#define CBT_AGENT_UBLK_CONTROL_H_

#include <liburing.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ublk/uapi.h"

namespace cbt::ublk {

enum class CommandEncoding { kIoctl, kLegacy };

// The opcode of control command `nr` (kCmd*) in `encoding`, and its name ("ADD_DEV"); 0 and
// "UNKNOWN" for numbers this library does not send.
uint32_t ControlOpcode(uint32_t nr, CommandEncoding encoding);
const char* ControlCommandName(uint32_t nr);

// "DEAD", "LIVE", "QUIESCED", "FAIL_IO" or "UNKNOWN(n)".
std::string DeviceStateName(uint16_t state);
// "USER_RECOVERY|CMD_IOCTL_ENCODE|0x100000" style.
std::string FeatureNames(uint64_t flags);

class UblkControl {
 public:
  static absl::StatusOr<std::unique_ptr<UblkControl>> Open(
      const std::string& path = kControlDevicePath);
  ~UblkControl();
  UblkControl(const UblkControl&) = delete;
  UblkControl& operator=(const UblkControl&) = delete;

  // The UBLK_F_* mask the driver supports. 0 = unknown: kernels before 6.5 answer
  // EINVAL/EOPNOTSUPP/ENODEV, which is not an error here.
  absl::StatusOr<uint64_t> GetFeatures();

  // ADD_DEV. `info->dev_id` is the wanted id or kAnyDeviceId; nr_hw_queues, queue_depth,
  // max_io_buf_bytes and flags must be set. On success *info holds the kernel's copy: the id,
  // the negotiated flags, max_io_buf_bytes rounded down to a page, queues clamped to the CPUs.
  absl::Status AddDevice(ublksrv_ctrl_dev_info* info);
  absl::Status GetDeviceInfo(uint32_t dev_id, ublksrv_ctrl_dev_info* info);
  // Only before START_DEV (EACCES after). params.len is set here.
  absl::Status SetParams(uint32_t dev_id, const ublk_params& params);
  // Fills *params (len is set here); DEVT is always filled in by the kernel.
  absl::Status GetParams(uint32_t dev_id, ublk_params* params);
  // Blocks until all queues fetched every tag, then adds /dev/ublkbN (the partition scan reads
  // through the queues, so they must be serving).
  absl::Status StartDevice(uint32_t dev_id, pid_t pid);
  // Removes the disk; pending FETCHes complete with -ENODEV. With USER_RECOVERY the kernel first
  // waits for every started request to be committed.
  absl::Status StopDevice(uint32_t dev_id);
  // Stops if needed and removes the device; waits for /dev/ublkcN to be released.
  absl::Status DeleteDevice(uint32_t dev_id);
  // Only once the previous server is fully gone (ublkc closed) and the device is QUIESCED;
  // EBUSY before that.
  absl::Status StartUserRecovery(uint32_t dev_id);
  // Blocks until the new queues fetched every tag, then makes the device LIVE again.
  absl::Status EndUserRecovery(uint32_t dev_id, pid_t pid);

  CommandEncoding encoding() const {
    return legacy_.load(std::memory_order_relaxed) ? CommandEncoding::kLegacy
                                                   : CommandEncoding::kIoctl;
  }
  const std::string& path() const { return path_; }

 private:
  UblkControl(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  // Sends one command; returns the CQE result (>= 0 or -errno).
  int Send(uint32_t nr, CommandEncoding encoding, const ublksrv_ctrl_cmd& cmd);
  // Send() in the current encoding; with `may_fall_back`, an EOPNOTSUPP/EINVAL answer to the
  // encoded form is retried legacy, and a success there switches the encoding.
  int SendCommand(uint32_t nr, const ublksrv_ctrl_cmd& cmd, bool may_fall_back);
  static absl::Status Error(uint32_t nr, uint32_t dev_id, int err);

  const std::string path_;
  const int fd_;
  std::mutex mu_;
  io_uring ring_{};
  bool ring_ready_ = false;
  std::atomic<bool> legacy_{false};
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_CONTROL_H_
