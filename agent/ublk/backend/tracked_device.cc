#include "ublk/backend/tracked_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "backend/errno_status.h"
#include "backend/log.h"

namespace cbt::ublk {
namespace {

absl::Status InUse(const std::string& what, const std::string& path, const char* advice) {
  return absl::FailedPreconditionError(absl::StrCat(
      what, " ", path, " is in use (mounted, or opened exclusively by another program): ",
      advice));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TrackedDevice>> TrackedDevice::Open(
    const OriginDevice& origin, std::unique_ptr<CbtMap> map,
    std::optional<uint32_t> recover_dev_id, const ProxyOptions& options) {
  // The claim keeps the origin from being mounted directly while it is tracked: a write that
  // bypassed the proxy would be missing from CBT and from snapshots.
  const int claim_fd = open(origin.resolved_path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
  if (claim_fd < 0) {
    if (errno == EBUSY) {
      return InUse("device", origin.resolved_path,
                   "unmount it; once tracked, applications use the proxy device");
    }
    return agent::ErrnoStatus(errno, absl::StrCat("open ", origin.resolved_path));
  }
  auto target = FileTarget::Open(origin.resolved_path);
  if (!target.ok()) {
    close(claim_fd);
    return target.status();
  }
  UblkDeviceOptions shape;
  (*target)->ConfigureDevice(&shape);
  if (map != nullptr && map->geometry().capacity_sectors != shape.capacity_sectors) {
    agent::LogWarning("ublk", "%s changed size (%llu -> %llu sectors); CBT starts a new generation",
                      origin.resolved_path.c_str(),
                      static_cast<unsigned long long>(map->geometry().capacity_sectors),
                      static_cast<unsigned long long>(shape.capacity_sectors));
    map.reset();
  }
  if (map == nullptr) {
    auto created = CbtMap::Create(shape.capacity_sectors);
    if (!created.ok()) {
      close(claim_fd);
      return created.status();
    }
    map = std::move(*created);
  }
  std::unique_ptr<TrackedDevice> tracked(
      new TrackedDevice(origin, options, claim_fd, std::move(*target), std::move(map)));
  tracked->target_->set_write_observer(tracked.get());

  absl::StatusOr<std::unique_ptr<UblkDevice>> device;
  if (recover_dev_id.has_value()) {
    UblkRecoverOptions recover;
    recover.control_path = options.control_path;
    device = UblkDevice::Recover(*recover_dev_id, tracked->target_.get(), recover);
  } else {
    device = UblkDevice::Create(tracked->DeviceShape(), tracked->target_.get());
  }
  if (!device.ok()) return device.status();
  tracked->device_ = std::move(*device);
  if (absl::Status s = tracked->device_->WaitForBlockDevice(options.block_device_timeout);
      !s.ok()) {
    return s;  // the destructor removes a device made here
  }
  struct stat st;
  if (stat(tracked->io_path().c_str(), &st) != 0) {
    return agent::ErrnoStatus(errno, absl::StrCat("stat ", tracked->io_path()));
  }
  tracked->proxy_number_ = {major(st.st_rdev), minor(st.st_rdev)};
  return tracked;
}

TrackedDevice::~TrackedDevice() {
  device_.reset();  // queue threads end before the target and map go
  target_.reset();
  close(claim_fd_);
}

UblkDeviceOptions TrackedDevice::DeviceShape() const {
  UblkDeviceOptions shape;
  target_->ConfigureDevice(&shape);
  shape.queue_count = options_.queue_count;
  shape.queue_depth = options_.queue_depth;
  shape.max_io_bytes = options_.max_io_bytes;
  shape.control_path = options_.control_path;
  return shape;
}

int TrackedDevice::BeforeWrite(uint64_t offset, uint64_t length) {
  if (CowStore* store = cow_.load(std::memory_order_acquire); store != nullptr) {
    // OK also when the snapshot overflows: the store corrupts itself, the write goes on.
    (void)store->PrepareOriginWrite(offset, length);
  }
  const uint64_t first = offset >> 9;
  const uint64_t end = (offset + length + 511) >> 9;
  if (!map_->Set(first, end - first).ok()) {
    // Only a corrupted map refuses; it answers DataLoss to readers until the next take.
    mark_failures_.fetch_add(1, std::memory_order_relaxed);
  }
  return 0;
}

bool TrackedDevice::BeforeWriteMayBlock(uint64_t offset, uint64_t length) {
  CowStore* store = cow_.load(std::memory_order_acquire);
  return store != nullptr && store->NeedsCopy(offset, length);
}

absl::Status TrackedDevice::StopCopyOnWrite(absl::Duration timeout) {
  if (cow_.load(std::memory_order_acquire) == nullptr) return absl::OkStatus();
  if (absl::Status s = device_->Quiesce(timeout); !s.ok()) return s;
  cow_.store(nullptr, std::memory_order_release);
  device_->Resume();
  return absl::OkStatus();
}

absl::Status TrackedDevice::CheckProxyNotInUse() const {
  const std::string path = io_path();
  const int fd = open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
  if (fd < 0) {
    if (errno == EBUSY) return InUse("proxy device", path, "unmount it or close it first");
    return agent::ErrnoStatus(errno, absl::StrCat("open ", path));
  }
  close(fd);
  return absl::OkStatus();
}

absl::Status TrackedDevice::Remove() { return device_->Delete(); }

absl::StatusOr<CbtMapState> TrackedDevice::HandOver(absl::Duration timeout) {
  if (absl::Status s = device_->Quiesce(timeout); !s.ok()) return s;
  CbtMapState state = map_->ExportState();
  if (absl::Status s = device_->HandOver(); !s.ok()) {
    device_->Resume();
    return s;
  }
  return state;
}

}  // namespace cbt::ublk
