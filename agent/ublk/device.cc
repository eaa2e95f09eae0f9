#include "ublk/device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "backend/errno_status.h"
#include "backend/log.h"

namespace cbt::ublk {
namespace {

// Writes `value` to the sysfs attribute `path`.
absl::Status WriteSysfs(const std::string& path, const std::string& value) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return agent::ErrnoStatus(errno, absl::StrCat("open ", path));
  const ssize_t n = write(fd, value.data(), value.size());
  const int err = errno;
  close(fd);
  if (n < 0) return agent::ErrnoStatus(err, absl::StrCat("write '", value, "' to ", path));
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateDeviceOptions(const UblkDeviceOptions& o) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("ublk device options: ", parts...));
  };
  if (o.logical_block_shift < 9 || o.logical_block_shift > 12) {
    return bad("logical block shift ", o.logical_block_shift, " is not in 9..12");
  }
  if (o.physical_block_shift < o.logical_block_shift || o.physical_block_shift > 20) {
    return bad("physical block shift ", o.physical_block_shift, " is below the logical one (",
               o.logical_block_shift, ") or above 20");
  }
  const uint64_t sectors_per_block = uint64_t{1} << (o.logical_block_shift - 9);
  if (o.capacity_sectors == 0 || o.capacity_sectors % sectors_per_block != 0) {
    return bad("capacity of ", o.capacity_sectors, " sectors is zero or not a multiple of the ",
               1u << o.logical_block_shift, "-byte logical block");
  }
  if (o.queue_count == 0 || o.queue_count > kMaxQueues) {
    return bad("queue count ", o.queue_count, " is not in 1..", kMaxQueues);
  }
  // Kernels before 6.4 overflowed a u16 above depth 2728; nobody needs more than 1024 here.
  if (o.queue_depth == 0 || o.queue_depth > 1024) {
    return bad("queue depth ", o.queue_depth, " is not in 1..1024");
  }
  if (o.max_io_bytes < 4096 || o.max_io_bytes > kMaxIoBufBytes || o.max_io_bytes % 4096 != 0) {
    return bad("max I/O size ", o.max_io_bytes, " is not a multiple of 4096 in 4096..",
               kMaxIoBufBytes);
  }
  if (o.recovery_reissue && !o.user_recovery) {
    return bad("recovery_reissue needs user_recovery");
  }
  if (o.discard_granularity != 0 && o.discard_granularity % (1u << o.logical_block_shift) != 0) {
    return bad("discard granularity ", o.discard_granularity,
               " is not a multiple of the logical block");
  }
  return absl::OkStatus();
}

ublksrv_ctrl_dev_info BuildDeviceInfo(const UblkDeviceOptions& options, uint64_t features) {
  ublksrv_ctrl_dev_info info{};
  info.nr_hw_queues = options.queue_count;
  info.queue_depth = options.queue_depth;
  info.max_io_buf_bytes = options.max_io_bytes;
  info.dev_id = options.dev_id;
  info.ublksrv_pid = -1;
  info.flags = kFCmdIoctlEncode;
  if (options.user_recovery) {
    info.flags |= kFUserRecovery;
    // Unknown features (before 6.5): ask anyway; ADD_DEV drops what the driver lacks.
    if (options.recovery_reissue && (features == 0 || (features & kFUserRecoveryReissue))) {
      info.flags |= kFUserRecoveryReissue;
    }
  }
  return info;
}

ublk_params BuildParams(const UblkDeviceOptions& options, uint32_t max_io_buf_bytes) {
  ublk_params p{};
  p.len = sizeof(p);
  p.types = kParamTypeBasic;
  ublk_param_basic& b = p.basic;
  if (options.volatile_cache) b.attrs |= kAttrVolatileCache | kAttrFua;
  if (options.read_only) b.attrs |= kAttrReadOnly;
  if (options.rotational) b.attrs |= kAttrRotational;
  b.logical_bs_shift = static_cast<uint8_t>(options.logical_block_shift);
  b.physical_bs_shift = static_cast<uint8_t>(options.physical_block_shift);
  b.io_min_shift = static_cast<uint8_t>(options.logical_block_shift);
  b.io_opt_shift = static_cast<uint8_t>(options.physical_block_shift);
  b.max_sectors = max_io_buf_bytes >> 9;
  b.dev_sectors = options.capacity_sectors;
  if (options.discard_granularity != 0 || options.max_discard_sectors != 0 ||
      options.max_write_zeroes_sectors != 0) {
    p.types |= kParamTypeDiscard;
    ublk_param_discard& d = p.discard;
    d.discard_granularity = options.discard_granularity != 0
                                ? options.discard_granularity
                                : uint32_t{1} << options.logical_block_shift;
    d.discard_alignment = options.discard_alignment;
    d.max_discard_sectors = options.max_discard_sectors;
    d.max_write_zeroes_sectors = options.max_write_zeroes_sectors;
    d.max_discard_segments = 1;  // the only count the driver supports
  }
  return p;
}

absl::StatusOr<std::unique_ptr<UblkDevice>> UblkDevice::Create(const UblkDeviceOptions& options,
                                                               Target* target) {
  if (absl::Status s = ValidateDeviceOptions(options); !s.ok()) return s;
  if (target == nullptr) return absl::InvalidArgumentError("ublk device: no target");
  absl::StatusOr<std::unique_ptr<UblkControl>> control = UblkControl::Open(options.control_path);
  if (!control.ok()) return control.status();
  absl::StatusOr<uint64_t> features = (*control)->GetFeatures();
  if (!features.ok()) return features.status();

  ublksrv_ctrl_dev_info info = BuildDeviceInfo(options, *features);
  if (absl::Status s = (*control)->AddDevice(&info); !s.ok()) return s;
  std::unique_ptr<UblkDevice> device(
      new UblkDevice(std::move(*control), target, *features, info));
  // From here on a failure removes the half-made device again.
  auto fail = [&device](absl::Status status) {
    device->AbandonQueues();
    if (absl::Status s = device->control_->DeleteDevice(device->id()); !s.ok()) {
      agent::LogWarning("ublk", "cleanup after a failed create: %s", s.ToString().c_str());
    }
    device->state_ = State::kDeleted;
    return status;
  };
  if (options.user_recovery && !(info.flags & kFUserRecovery)) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "ublk device ", info.dev_id, ": the driver does not support USER_RECOVERY")));
  }
  ublk_params params = BuildParams(options, info.max_io_buf_bytes);
  if (absl::Status s = device->control_->SetParams(info.dev_id, params); !s.ok()) return fail(s);
  device->params_ = params;
  if (absl::Status s = device->OpenCharDevice(options.char_device_timeout); !s.ok()) {
    return fail(s);
  }
  if (absl::Status s = device->StartQueues(); !s.ok()) return fail(s);
  if (absl::Status s = device->control_->StartDevice(info.dev_id, getpid()); !s.ok()) {
    return fail(s);
  }
  device->state_ = State::kRunning;
  // DEVT (the disk's major:minor) is known now.
  if (absl::Status s = device->control_->GetParams(info.dev_id, &device->params_); !s.ok()) {
    agent::LogWarning("ublk", "%s", s.ToString().c_str());
  }
  if (!options.io_scheduler.empty()) {
    // START_DEV returned after add_disk(): the queue's sysfs directory exists.
    const std::string attr =
        absl::StrCat("/sys/block/ublkb", info.dev_id, "/queue/scheduler");
    if (absl::Status s = WriteSysfs(attr, options.io_scheduler); !s.ok()) {
      agent::LogWarning("ublk", "I/O scheduler of ublk device %u left as it is: %s", info.dev_id,
                        s.ToString().c_str());
    }
  }
  return device;
}

absl::StatusOr<std::unique_ptr<UblkDevice>> UblkDevice::Recover(
    uint32_t dev_id, Target* target, const UblkRecoverOptions& options) {
  if (target == nullptr) return absl::InvalidArgumentError("ublk device: no target");
  absl::StatusOr<std::unique_ptr<UblkControl>> control = UblkControl::Open(options.control_path);
  if (!control.ok()) return control.status();
  absl::StatusOr<uint64_t> features = (*control)->GetFeatures();
  if (!features.ok()) return features.status();
  ublksrv_ctrl_dev_info info;
  if (absl::Status s = (*control)->GetDeviceInfo(dev_id, &info); !s.ok()) return s;
  if (!(info.flags & kFUserRecovery)) {
    return absl::FailedPreconditionError(
        absl::StrCat("ublk device ", dev_id, " was created without USER_RECOVERY"));
  }
  std::unique_ptr<UblkDevice> device(
      new UblkDevice(std::move(*control), target, *features, info));
  if (absl::Status s = device->control_->GetParams(dev_id, &device->params_); !s.ok()) return s;

  const absl::Time deadline = absl::Now() + options.busy_timeout;
  while (true) {
    absl::Status s = device->control_->StartUserRecovery(dev_id);
    if (s.ok()) break;
    // EBUSY (FailedPrecondition): the old server's ublkc is still open or the kernel has not
    // quiesced the device yet.
    if (s.code() != absl::StatusCode::kFailedPrecondition || absl::Now() >= deadline) return s;
    absl::SleepFor(absl::Milliseconds(50));
  }
  // From here on the device is ours to serve; a failure leaves it QUIESCED (no DEL_DEV: it is
  // not this process's to remove).
  auto fail = [&device](absl::Status status) {
    device->AbandonQueues();
    device->state_ = State::kStopped;
    return status;
  };
  if (absl::Status s = device->OpenCharDevice(options.char_device_timeout); !s.ok()) {
    return fail(s);
  }
  if (absl::Status s = device->StartQueues(); !s.ok()) return fail(s);
  if (absl::Status s = device->control_->EndUserRecovery(dev_id, getpid()); !s.ok()) {
    return fail(s);
  }
  device->state_ = State::kRunning;
  if (absl::Status s = device->control_->GetDeviceInfo(dev_id, &device->info_); !s.ok()) {
    agent::LogWarning("ublk", "%s", s.ToString().c_str());
  }
  return device;
}

UblkDevice::~UblkDevice() {
  bool running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    running = state_ == State::kRunning;
  }
  if (running) {
    if (absl::Status s = Delete(); !s.ok()) agent::LogWarning("ublk", "%s", s.ToString().c_str());
  }
  AbandonQueues();
}

std::string UblkDevice::block_device_path() const {
  return absl::StrCat(kBlockDevicePrefix, info_.dev_id);
}

std::string UblkDevice::char_device_path() const {
  return absl::StrCat(kCharDevicePrefix, info_.dev_id);
}

absl::Status UblkDevice::OpenCharDevice(absl::Duration timeout) {
  const std::string path = char_device_path();
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      char_fd_ = fd;
      return absl::OkStatus();
    }
    int err = errno;
    // ENOENT: devtmpfs/udev has not made the node yet; EBUSY: udev probes it for a moment.
    if ((err != ENOENT && err != EBUSY) || absl::Now() >= deadline) {
      return agent::ErrnoStatus(err, absl::StrCat("open ", path));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

absl::Status UblkDevice::StartQueues() {
  for (uint16_t q = 0; q < info_.nr_hw_queues; ++q) {
    UblkQueueOptions options;
    options.dev_id = info_.dev_id;
    options.queue_id = q;
    options.depth = info_.queue_depth;
    options.max_io_buf_bytes = info_.max_io_buf_bytes;
    options.char_fd = char_fd_;
    options.encoding = control_->encoding();
    auto queue = std::make_unique<UblkQueue>(options, target_);
    absl::Status s = queue->Start();
    if (!s.ok()) return s;
    queues_.push_back(std::move(queue));
  }
  return absl::OkStatus();
}

void UblkDevice::AbandonQueues() {
  for (auto& queue : queues_) queue->RequestExit();
  queues_.clear();  // joins
  if (char_fd_ >= 0) {
    close(char_fd_);
    char_fd_ = -1;
  }
}

absl::Status UblkDevice::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != State::kRunning) return absl::OkStatus();
  // STOP_DEV waits for every started request, held ones included.
  for (auto& queue : queues_) queue->Resume();
  absl::Status status = control_->StopDevice(id());
  if (!status.ok()) {
    // The queues will not see their aborts; make them leave.
    for (auto& queue : queues_) queue->RequestExit();
  }
  for (auto& queue : queues_) queue->Join();
  queues_.clear();
  if (char_fd_ >= 0) {
    close(char_fd_);  // before DEL_DEV, which waits for it
    char_fd_ = -1;
  }
  state_ = State::kStopped;
  return status;
}

absl::Status UblkDevice::Delete() {
  absl::Status stopped = Stop();
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == State::kDeleted) return stopped;
  absl::Status status = control_->DeleteDevice(id());
  if (status.ok()) state_ = State::kDeleted;
  return stopped.ok() ? status : stopped;
}

absl::Status UblkDevice::HandOver() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != State::kRunning) {
    return absl::FailedPreconditionError(
        absl::StrCat("ublk device ", id(), " is not running; nothing to hand over"));
  }
  if (!(info_.flags & kFUserRecovery)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ublk device ", id(), " has no USER_RECOVERY; handing it over would remove it"));
  }
  AbandonQueues();
  state_ = State::kStopped;  // not ours any more: the destructor must not STOP_DEV / DEL_DEV
  return absl::OkStatus();
}

absl::Status UblkDevice::Quiesce(absl::Duration timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time deadline = absl::Now() + timeout;
  for (auto& queue : queues_) {
    absl::Duration left = timeout == absl::InfiniteDuration() ? timeout : deadline - absl::Now();
    if (absl::Status s = queue->Quiesce(left); !s.ok()) {
      for (auto& q : queues_) q->Resume();
      return s;
    }
  }
  return absl::OkStatus();
}

void UblkDevice::Resume() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& queue : queues_) queue->Resume();
}

absl::Status UblkDevice::WaitForBlockDevice(absl::Duration timeout) const {
  const std::string path = block_device_path();
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(path, " did not appear within ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

}  // namespace cbt::ublk
