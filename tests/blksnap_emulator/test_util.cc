#include "tests/blksnap_emulator/test_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"

namespace cbt::blksnap::emulator::testing {
namespace {

void CopyName(uint8_t* out, const char* name) {
  std::memset(out, 0, kFilterNameLength);
  std::memcpy(out, name, ::strnlen(name, kFilterNameLength));
}

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) {
  return ::remove(path);
}

}  // namespace

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                        "/blksnap-emulator-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) std::abort();
  path_ = pattern;
}

TempDir::~TempDir() { ::nftw(path_.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS); }

std::string TempDir::Subdir(const std::string& name) const {
  const std::string dir = path_ + "/" + name;
  ::mkdir(dir.c_str(), 0700);
  return dir;
}

std::string ControlPath(Flavour flavour) {
  return flavour == Flavour::kVal7 ? kVal7ControlDevice : kUpstreamControlDevice;
}

std::string ImagePath(Flavour flavour, uint32_t major, uint32_t minor) {
  switch (flavour) {
    case Flavour::kLk615:
      return absl::StrFormat("/dev/blksnap-%u-%u", major, minor);
    case Flavour::kV7:
      return absl::StrFormat("/dev/blksnap-image_%u:%u", major, minor);
    case Flavour::kVal7:
      return absl::StrFormat("/dev/veeamblksnapimg_%u:%u", major, minor);
  }
  return "";
}

std::string FlavourTestName(Flavour flavour) {
  switch (flavour) {
    case Flavour::kLk615:
      return "lk615";
    case Flavour::kV7:
      return "v7";
    case Flavour::kVal7:
      return "val7";
  }
  return "unknown";
}

std::string UuidText(const blksnap_uuid& id) {
  std::string text;
  for (uint8_t byte : id.b) text += absl::StrFormat("%02x", byte);
  return text;
}

bool UuidIsNil(const blksnap_uuid& id) {
  for (uint8_t byte : id.b) {
    if (byte != 0) return false;
  }
  return true;
}

std::string Pattern(uint64_t length, uint32_t seed) {
  std::string out(length, '\0');
  uint32_t state = seed * 2654435761u + 1;
  for (uint64_t i = 0; i < length; ++i) {
    state = state * 1103515245u + 12345u;
    out[i] = static_cast<char>(state >> 16);
  }
  return out;
}

Driver::~Driver() {
  for (const auto& [path, fd] : fds_) kernel_->Close(fd);
}

int Driver::DeviceFd(const std::string& device) {
  auto it = fds_.find(device);
  if (it != fds_.end()) return it->second;
  int fd = -1;
  if (kernel_->Open(device, O_RDONLY, &fd) != 0) return -1;
  fds_[device] = fd;
  return fd;
}

int Driver::FilterFd(const std::string& device) {
  return flavour_ == Flavour::kVal7 ? DeviceFd(kVal7FilterDevice) : DeviceFd(device);
}

int Driver::ControlFd() { return DeviceFd(ControlPath(flavour_)); }

int Driver::Attach(const std::string& device, const char* name) {
  const int fd = FilterFd(device);
  if (fd < 0) return EBADF;
  switch (flavour_) {
    case Flavour::kLk615: {
      blkfilter_attach arg{};
      CopyName(arg.name, name);
      return kernel_->Ioctl(fd, kLk615BlkfilterAttach, &arg);
    }
    case Flavour::kV7: {
      blkfilter_name arg{};
      CopyName(arg.name, name);
      return kernel_->Ioctl(fd, kV7BlkfilterAttach, &arg);
    }
    case Flavour::kVal7: {
      bdevfilter_name arg{};
      arg.devpath = reinterpret_cast<uintptr_t>(device.c_str());
      CopyName(arg.name, name);
      return kernel_->Ioctl(fd, kVal7BdevfilterAttach, &arg);
    }
  }
  return EINVAL;
}

int Driver::Detach(const std::string& device, const char* name) {
  const int fd = FilterFd(device);
  if (fd < 0) return EBADF;
  switch (flavour_) {
    case Flavour::kLk615: {
      blkfilter_detach arg{};
      CopyName(arg.name, name);
      return kernel_->Ioctl(fd, kLk615BlkfilterDetach, &arg);
    }
    case Flavour::kV7: {
      blkfilter_name arg{};
      CopyName(arg.name, name);
      return kernel_->Ioctl(fd, kV7BlkfilterDetach, &arg);
    }
    case Flavour::kVal7: {
      bdevfilter_name arg{};
      arg.devpath = reinterpret_cast<uintptr_t>(device.c_str());
      CopyName(arg.name, name);
      return kernel_->Ioctl(fd, kVal7BdevfilterDetach, &arg);
    }
  }
  return EINVAL;
}

int Driver::Ctl(const std::string& device, uint32_t cmd, const void* opt, uint32_t optlen,
                const char* name) {
  const int fd = FilterFd(device);
  if (fd < 0) return EBADF;
  if (flavour_ == Flavour::kVal7) {
    bdevfilter_ctl arg{};
    arg.devpath = reinterpret_cast<uintptr_t>(device.c_str());
    CopyName(arg.name, name);
    arg.cmd = cmd;
    arg.optlen = optlen;
    arg.opt = reinterpret_cast<uintptr_t>(opt);
    return kernel_->Ioctl(fd, kVal7BdevfilterCtl, &arg);
  }
  blkfilter_ctl arg{};
  CopyName(arg.name, name);
  arg.cmd = cmd;
  arg.optlen = optlen;
  arg.opt = reinterpret_cast<uintptr_t>(opt);
  return kernel_->Ioctl(fd, flavour_ == Flavour::kLk615 ? kLk615BlkfilterCtl : kV7BlkfilterCtl,
                        &arg);
}

int Driver::CbtInfo(const std::string& device, blksnap_cbtinfo* info) {
  return Ctl(device, kCtlCbtInfo, info, sizeof(*info));
}

int Driver::CbtMap(const std::string& device, uint32_t offset, uint32_t length,
                   uint8_t* buffer) {
  blksnap_cbtmap arg{};
  arg.offset = offset;
  arg.length = length;
  arg.buffer = reinterpret_cast<uintptr_t>(buffer);
  return Ctl(device, kCtlCbtMap, &arg, sizeof(arg));
}

int Driver::CbtMapAll(const std::string& device, std::vector<uint8_t>* map) {
  blksnap_cbtinfo info{};
  if (int error = CbtInfo(device, &info); error != 0) return error;
  map->assign(info.block_count, 0xEE);
  return CbtMap(device, 0, info.block_count, map->data());
}

int Driver::CbtDirty(const std::string& device, const std::vector<blksnap_sectors>& ranges) {
  blksnap_cbtdirty arg{};
  arg.count = static_cast<uint32_t>(ranges.size());
  arg.dirty_sectors = reinterpret_cast<uintptr_t>(ranges.data());
  return Ctl(device, kCtlCbtDirty, &arg, sizeof(arg));
}

int Driver::SnapshotAdd(const std::string& device, const blksnap_uuid& id) {
  blksnap_snapshotadd arg{};
  arg.id = id;
  return Ctl(device, kCtlSnapshotAdd, &arg, sizeof(arg));
}

int Driver::SnapshotInfo(const std::string& device, blksnap_snapshotinfo* info) {
  return Ctl(device, kCtlSnapshotInfo, info, sizeof(*info));
}

int Driver::RawControl(unsigned long request, void* arg) {
  const int fd = ControlFd();
  if (fd < 0) return EBADF;
  return kernel_->Ioctl(fd, request, arg);
}

int Driver::Version(blksnap_version* version) { return RawControl(kIoctlVersion, version); }

int Driver::Create(const std::string& diff_storage, uint64_t limit_sectors, blksnap_uuid* id) {
  blksnap_snapshot_create arg{};
  arg.diff_storage_limit_sect = limit_sectors;
  arg.diff_storage_filename = reinterpret_cast<uintptr_t>(diff_storage.c_str());
  const int error = RawControl(kIoctlSnapshotCreate, &arg);
  if (error == 0) *id = arg.id;
  return error;
}

int Driver::Destroy(const blksnap_uuid& id) {
  blksnap_uuid arg = id;
  return RawControl(kIoctlSnapshotDestroy, &arg);
}

int Driver::Take(const blksnap_uuid& id) {
  blksnap_uuid arg = id;
  return RawControl(kIoctlSnapshotTake, &arg);
}

int Driver::Collect(uint32_t capacity, bool with_array, std::vector<blksnap_uuid>* ids,
                    uint32_t* count) {
  ids->assign(capacity, blksnap_uuid{});
  blksnap_snapshot_collect arg{};
  arg.count = capacity;
  arg.ids = with_array ? reinterpret_cast<uintptr_t>(ids->data()) : 0;
  const int error = RawControl(kIoctlSnapshotCollect, &arg);
  *count = arg.count;
  return error;
}

int Driver::WaitEvent(const blksnap_uuid& id, uint32_t timeout_jiffies,
                      blksnap_snapshot_event* event) {
  std::memset(event, 0, sizeof(*event));
  event->id = id;
  event->timeout_ms = timeout_jiffies;
  return RawControl(kIoctlSnapshotWaitEvent, event);
}

int Driver::BlockSize64(const std::string& path, uint64_t* size) {
  int fd = -1;
  if (int error = kernel_->Open(path, O_RDONLY, &fd); error != 0) return error;
  const int error = kernel_->Ioctl(fd, kBlkGetSize64, size);
  kernel_->Close(fd);
  return error;
}

}  // namespace cbt::blksnap::emulator::testing
