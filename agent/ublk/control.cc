#include "ublk/control.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backend/errno_status.h"
#include "ublk/uring_cmd.h"

namespace cbt::ublk {
namespace {

struct CommandSpec {
  uint32_t nr;
  uint32_t encoded;
  const char* name;
};

constexpr CommandSpec kCommands[] = {
    {kCmdGetQueueAffinity, kUCmdGetQueueAffinity, "GET_QUEUE_AFFINITY"},
    {kCmdGetDevInfo, kUCmdGetDevInfo, "GET_DEV_INFO"},
    {kCmdAddDev, kUCmdAddDev, "ADD_DEV"},
    {kCmdDelDev, kUCmdDelDev, "DEL_DEV"},
    {kCmdStartDev, kUCmdStartDev, "START_DEV"},
    {kCmdStopDev, kUCmdStopDev, "STOP_DEV"},
    {kCmdSetParams, kUCmdSetParams, "SET_PARAMS"},
    {kCmdGetParams, kUCmdGetParams, "GET_PARAMS"},
    {kCmdStartUserRecovery, kUCmdStartUserRecovery, "START_USER_RECOVERY"},
    {kCmdEndUserRecovery, kUCmdEndUserRecovery, "END_USER_RECOVERY"},
    {kCmdGetDevInfo2, kUCmdGetDevInfo2, "GET_DEV_INFO2"},
    {kCmdGetFeatures, kUCmdGetFeatures, "GET_FEATURES"},
    {kCmdDelDevAsync, kUCmdDelDevAsync, "DEL_DEV_ASYNC"},
};

const CommandSpec* FindCommand(uint32_t nr) {
  for (const CommandSpec& spec : kCommands) {
    if (spec.nr == nr) return &spec;
  }
  return nullptr;
}

ublksrv_ctrl_cmd Header(uint32_t dev_id) {
  ublksrv_ctrl_cmd cmd{};
  cmd.dev_id = dev_id;
  cmd.queue_id = kNoQueue;
  return cmd;
}

template <typename T>
void SetBuffer(ublksrv_ctrl_cmd* cmd, T* buffer) {
  cmd->addr = reinterpret_cast<uintptr_t>(buffer);
  cmd->len = sizeof(T);
}

}  // namespace

uint32_t ControlOpcode(uint32_t nr, CommandEncoding encoding) {
  const CommandSpec* spec = FindCommand(nr);
  if (spec == nullptr) return 0;
  return encoding == CommandEncoding::kIoctl ? spec->encoded : spec->nr;
}

const char* ControlCommandName(uint32_t nr) {
  const CommandSpec* spec = FindCommand(nr);
  return spec == nullptr ? "UNKNOWN" : spec->name;
}

std::string DeviceStateName(uint16_t state) {
  switch (state) {
    case kDevStateDead: return "DEAD";
    case kDevStateLive: return "LIVE";
    case kDevStateQuiesced: return "QUIESCED";
    case kDevStateFailIo: return "FAIL_IO";
  }
  return absl::StrCat("UNKNOWN(", state, ")");
}

std::string FeatureNames(uint64_t flags) {
  static constexpr const char* kNames[] = {
      "SUPPORT_ZERO_COPY", "URING_CMD_COMP_IN_TASK", "NEED_GET_DATA", "USER_RECOVERY",
      "USER_RECOVERY_REISSUE", "UNPRIVILEGED_DEV", "CMD_IOCTL_ENCODE", "USER_COPY", "ZONED",
      "USER_RECOVERY_FAIL_IO", "UPDATE_SIZE", "AUTO_BUF_REG", "QUIESCE", "PER_IO_DAEMON",
      "BUF_REG_OFF_DAEMON", "BATCH_IO", "INTEGRITY", "SAFE_STOP_DEV", "NO_AUTO_PART_SCAN",
      "SHMEM_ZC"};
  std::string out;
  uint64_t unknown = 0;
  for (int bit = 0; bit < 64; ++bit) {
    if (!(flags & (uint64_t{1} << bit))) continue;
    if (bit < static_cast<int>(std::size(kNames))) {
      absl::StrAppend(&out, out.empty() ? "" : "|", kNames[bit]);
    } else {
      unknown |= uint64_t{1} << bit;
    }
  }
  if (unknown != 0) absl::StrAppend(&out, out.empty() ? "" : "|", absl::StrFormat("%#x", unknown));
  return out.empty() ? "0" : out;
}

absl::StatusOr<std::unique_ptr<UblkControl>> UblkControl::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    // No control device means no ublk_drv: the mechanism is unavailable, not a bad argument.
    return agent::ErrnoStatus(err, absl::StrCat("open ", path),
                              err == ENOENT || err == ENODEV || err == ENXIO
                                  ? absl::StatusCode::kUnavailable
                                  : agent::ErrnoToStatusCode(err));
  }
  std::unique_ptr<UblkControl> control(new UblkControl(path, fd));
  int ret = io_uring_queue_init(4, &control->ring_, IORING_SETUP_SQE128);
  if (ret < 0) {
    return agent::ErrnoStatus(-ret, absl::StrCat("io_uring_queue_init(SQE128) for ", path));
  }
  control->ring_ready_ = true;
  return control;
}

UblkControl::~UblkControl() {
  if (ring_ready_) io_uring_queue_exit(&ring_);
  close(fd_);
}

int UblkControl::Send(uint32_t nr, CommandEncoding encoding, const ublksrv_ctrl_cmd& cmd) {
  std::lock_guard<std::mutex> lock(mu_);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) return -EBUSY;  // cannot happen: one command at a time
  PrepareControlCommand(sqe, fd_, ControlOpcode(nr, encoding), cmd, nr);
  int ret;
  do {
    ret = io_uring_submit(&ring_);
  } while (ret == -EINTR);
  if (ret < 0) return ret;
  io_uring_cqe* cqe = nullptr;
  // Control commands may block for a long time (START_DEV waits for the queues); a signal
  // handler interrupting the wait does not cancel them.
  do {
    ret = io_uring_wait_cqe(&ring_, &cqe);
  } while (ret == -EINTR);
  if (ret < 0) return ret;
  int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  return res;
}

int UblkControl::SendCommand(uint32_t nr, const ublksrv_ctrl_cmd& cmd, bool may_fall_back) {
  CommandEncoding encoding = this->encoding();
  int res = Send(nr, encoding, cmd);
  if (may_fall_back && encoding == CommandEncoding::kIoctl &&
      (res == -EOPNOTSUPP || res == -EINVAL)) {
    int legacy = Send(nr, CommandEncoding::kLegacy, cmd);
    if (legacy >= 0) {
      legacy_.store(true, std::memory_order_relaxed);
      return legacy;
    }
  }
  return res;
}

absl::Status UblkControl::Error(uint32_t nr, uint32_t dev_id, int err) {
  std::string context = dev_id == kAnyDeviceId
                            ? absl::StrCat(ControlCommandName(nr), " on a new ublk device")
                            : absl::StrCat(ControlCommandName(nr), " on ublk device ", dev_id);
  return agent::ErrnoStatus(err, std::move(context));
}

absl::StatusOr<uint64_t> UblkControl::GetFeatures() {
  uint64_t features = 0;
  ublksrv_ctrl_cmd cmd = Header(kAnyDeviceId);
  SetBuffer(&cmd, &features);
  int res = Send(kCmdGetFeatures, CommandEncoding::kIoctl, cmd);
  if (res == -EINVAL || res == -EOPNOTSUPP || res == -ENODEV) return uint64_t{0};
  if (res < 0) {
    return agent::ErrnoStatus(-res, absl::StrCat("GET_FEATURES on ", path_));
  }
  return features;
}

absl::Status UblkControl::AddDevice(ublksrv_ctrl_dev_info* info) {
  ublksrv_ctrl_cmd cmd = Header(info->dev_id);
  SetBuffer(&cmd, info);
  int res = SendCommand(kCmdAddDev, cmd, /*may_fall_back=*/true);
  if (res < 0) return Error(kCmdAddDev, cmd.dev_id, -res);
  return absl::OkStatus();
}

absl::Status UblkControl::GetDeviceInfo(uint32_t dev_id, ublksrv_ctrl_dev_info* info) {
  *info = {};
  ublksrv_ctrl_cmd cmd = Header(dev_id);
  SetBuffer(&cmd, info);
  int res = SendCommand(kCmdGetDevInfo, cmd, /*may_fall_back=*/true);
  if (res < 0) return Error(kCmdGetDevInfo, dev_id, -res);
  return absl::OkStatus();
}

absl::Status UblkControl::SetParams(uint32_t dev_id, const ublk_params& params) {
  ublk_params copy = params;
  copy.len = sizeof(copy);
  ublksrv_ctrl_cmd cmd = Header(dev_id);
  SetBuffer(&cmd, &copy);
  int res = SendCommand(kCmdSetParams, cmd, false);
  if (res < 0) return Error(kCmdSetParams, dev_id, -res);
  return absl::OkStatus();
}

absl::Status UblkControl::GetParams(uint32_t dev_id, ublk_params* params) {
  *params = {};
  params->len = sizeof(*params);
  ublksrv_ctrl_cmd cmd = Header(dev_id);
  SetBuffer(&cmd, params);
  int res = SendCommand(kCmdGetParams, cmd, false);
  if (res < 0) return Error(kCmdGetParams, dev_id, -res);
  return absl::OkStatus();
}

absl::Status UblkControl::StartDevice(uint32_t dev_id, pid_t pid) {
  ublksrv_ctrl_cmd cmd = Header(dev_id);
  cmd.data[0] = static_cast<uint64_t>(pid);
  int res = SendCommand(kCmdStartDev, cmd, false);
  if (res < 0) return Error(kCmdStartDev, dev_id, -res);
  return absl::OkStatus();
}

absl::Status UblkControl::StopDevice(uint32_t dev_id) {
  int res = SendCommand(kCmdStopDev, Header(dev_id), false);
  if (res < 0) return Error(kCmdStopDev, dev_id, -res);
  return absl::OkStatus();
}

absl::Status UblkControl::DeleteDevice(uint32_t dev_id) {
  int res = SendCommand(kCmdDelDev, Header(dev_id), false);
  if (res < 0) return Error(kCmdDelDev, dev_id, -res);
  return absl::OkStatus();
}

absl::Status UblkControl::StartUserRecovery(uint32_t dev_id) {
  int res = SendCommand(kCmdStartUserRecovery, Header(dev_id), false);
  if (res < 0) return Error(kCmdStartUserRecovery, dev_id, -res);
  return absl::OkStatus();
}

absl::Status UblkControl::EndUserRecovery(uint32_t dev_id, pid_t pid) {
  ublksrv_ctrl_cmd cmd = Header(dev_id);
  cmd.data[0] = static_cast<uint64_t>(pid);
  int res = SendCommand(kCmdEndUserRecovery, cmd, false);
  if (res < 0) return Error(kCmdEndUserRecovery, dev_id, -res);
  return absl::OkStatus();
}

}  // namespace cbt::ublk
