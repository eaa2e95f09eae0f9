#include "blksnap/filter.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "backend/errno_status.h"

namespace cbt::blksnap {
namespace {

template <size_t N>
void SetFilterName(uint8_t (&name)[N]) {
  static_assert(N == kFilterNameLength);
  std::memset(name, 0, N);
  std::memcpy(name, kFilterName, sizeof(kFilterName) - 1);
}

uint64_t Pointer(const void* p) { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)); }

// lk6.15 and v7: ioctls on the block device itself.
class BlockDeviceFilter final : public FilterTransport {
 public:
  BlockDeviceFilter(Kernel& kernel, Flavour flavour) : kernel_(kernel), flavour_(flavour) {}

  Flavour flavour() const override { return flavour_; }

  int Attach(const DeviceRef& device) override {
    if (device.fd < 0) return EBADF;
    if (flavour_ == Flavour::kLk615) {
      blkfilter_attach arg{};
      SetFilterName(arg.name);
      return kernel_.Ioctl(device.fd, kLk615BlkfilterAttach, &arg);
    }
    blkfilter_name arg{};
    SetFilterName(arg.name);
    return kernel_.Ioctl(device.fd, kV7BlkfilterAttach, &arg);
  }

  int Detach(const DeviceRef& device) override {
    if (device.fd < 0) return EBADF;
    if (flavour_ == Flavour::kLk615) {
      blkfilter_detach arg{};
      SetFilterName(arg.name);
      return kernel_.Ioctl(device.fd, kLk615BlkfilterDetach, &arg);
    }
    blkfilter_name arg{};
    SetFilterName(arg.name);
    return kernel_.Ioctl(device.fd, kV7BlkfilterDetach, &arg);
  }

  int Ctl(const DeviceRef& device, uint32_t cmd, void* opt, uint32_t optlen) override {
    if (device.fd < 0) return EBADF;
    blkfilter_ctl arg{};
    SetFilterName(arg.name);
    arg.cmd = cmd;
    arg.optlen = optlen;
    arg.opt = Pointer(opt);
    return kernel_.Ioctl(device.fd,
                         flavour_ == Flavour::kLk615 ? kLk615BlkfilterCtl : kV7BlkfilterCtl, &arg);
  }

 private:
  Kernel& kernel_;
  const Flavour flavour_;
};

// val7: the misc device /dev/bdevfilter, with the block device's path in every request.
class BdevfilterTransport final : public FilterTransport {
 public:
  BdevfilterTransport(Kernel& kernel, int fd) : kernel_(kernel), fd_(fd) {}
  ~BdevfilterTransport() override { kernel_.Close(fd_); }

  Flavour flavour() const override { return Flavour::kVal7; }

  int Attach(const DeviceRef& device) override {
    bdevfilter_name arg{};
    arg.devpath = Pointer(device.path.c_str());
    SetFilterName(arg.name);
    return kernel_.Ioctl(fd_, kVal7BdevfilterAttach, &arg);
  }

  int Detach(const DeviceRef& device) override {
    bdevfilter_name arg{};
    arg.devpath = Pointer(device.path.c_str());
    SetFilterName(arg.name);
    return kernel_.Ioctl(fd_, kVal7BdevfilterDetach, &arg);
  }

  int Ctl(const DeviceRef& device, uint32_t cmd, void* opt, uint32_t optlen) override {
    bdevfilter_ctl arg{};
    arg.devpath = Pointer(device.path.c_str());
    SetFilterName(arg.name);
    arg.cmd = cmd;
    arg.optlen = optlen;
    arg.opt = Pointer(opt);
    return kernel_.Ioctl(fd_, kVal7BdevfilterCtl, &arg);
  }

 private:
  Kernel& kernel_;
  const int fd_;
};

}  // namespace

int FilterTransport::CbtInfo(const DeviceRef& device, blksnap_cbtinfo* info) {
  *info = blksnap_cbtinfo{};
  return Ctl(device, kCtlCbtInfo, info, sizeof(*info));
}

int FilterTransport::CbtMap(const DeviceRef& device, uint32_t offset, uint32_t length,
                            uint8_t* out) {
  blksnap_cbtmap arg{};
  arg.offset = offset;
  arg.length = length;
  arg.buffer = Pointer(out);
  return Ctl(device, kCtlCbtMap, &arg, sizeof(arg));
}

int FilterTransport::CbtDirty(const DeviceRef& device, const std::vector<blksnap_sectors>& ranges) {
  blksnap_cbtdirty arg{};
  arg.count = static_cast<uint32_t>(ranges.size());
  arg.dirty_sectors = Pointer(ranges.data());
  return Ctl(device, kCtlCbtDirty, &arg, sizeof(arg));
}

int FilterTransport::SnapshotAdd(const DeviceRef& device, const blksnap_uuid& id) {
  blksnap_snapshotadd arg{};
  arg.id = id;
  return Ctl(device, kCtlSnapshotAdd, &arg, sizeof(arg));
}

int FilterTransport::SnapshotInfo(const DeviceRef& device, blksnap_snapshotinfo* info) {
  *info = blksnap_snapshotinfo{};
  return Ctl(device, kCtlSnapshotInfo, info, sizeof(*info));
}

absl::StatusOr<std::unique_ptr<FilterTransport>> NewFilterTransport(Kernel& kernel,
                                                                    Flavour flavour) {
  if (flavour != Flavour::kVal7) return std::make_unique<BlockDeviceFilter>(kernel, flavour);
  int fd = -1;
  if (int err = kernel.Open(kVal7FilterDevice, O_RDWR, &fd); err != 0) {
    return agent::ErrnoStatus(
        err, absl::StrCat("cannot open ", kVal7FilterDevice, " (bdevfilter module)"),
        err == EACCES || err == EPERM ? absl::StatusCode::kPermissionDenied
                                      : absl::StatusCode::kUnavailable);
  }
  return std::make_unique<BdevfilterTransport>(kernel, fd);
}

}  // namespace cbt::blksnap
