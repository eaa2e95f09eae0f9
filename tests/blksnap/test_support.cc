#include "test_support.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

namespace cbt::blksnap::testing {

std::string MakeTempDir(const std::string& prefix) {
  const char* base = getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr && base[0] != '\0' ? base : "/tmp") + "/" +
                        prefix + "-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) return "";
  return std::string(buffer.data());
}

void RemoveTree(const std::string& path) {
  std::error_code ignored;
  if (!path.empty()) std::filesystem::remove_all(path, ignored);
}

int ThreadCount() {
  // ThreadSanitizer starts a background thread of its own with the first thread created: make
  // sure that has happened before any count is taken.
  static const bool first_thread_made = (std::thread([] {}).join(), true);
  (void)first_thread_made;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int count = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

namespace {

void Name(uint8_t* name) {
  std::memset(name, 0, kFilterNameLength);
  std::memcpy(name, "blksnap", 7);
}

uint64_t Ptr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

}  // namespace

RawBlksnap::RawBlksnap(Kernel& kernel, Flavour flavour) : kernel_(kernel), flavour_(flavour) {
  kernel_.Open(flavour == Flavour::kVal7 ? "/dev/veeamblksnap" : "/dev/blksnap-control", O_RDWR,
               &control_fd_);
}

RawBlksnap::~RawBlksnap() {
  if (control_fd_ >= 0) kernel_.Close(control_fd_);
}

int RawBlksnap::Create(const std::string& diff_storage, uint64_t limit_bytes, Uuid* id) {
  blksnap_snapshot_create arg{};
  arg.diff_storage_limit_sect = limit_bytes / 512;
  arg.diff_storage_filename = Ptr(diff_storage.c_str());
  const int err = kernel_.Ioctl(control_fd_, 0xC0205601, &arg);
  if (err == 0) std::memcpy(id->bytes.data(), arg.id.b, 16);
  return err;
}

int RawBlksnap::Add(const std::string& device, const Uuid& id) {
  blksnap_snapshotadd arg{};
  std::memcpy(arg.id.b, id.bytes.data(), 16);
  return Filter(device, 2, 3, &arg, sizeof(arg));
}

int RawBlksnap::Take(const Uuid& id) {
  blksnap_uuid arg{};
  std::memcpy(arg.b, id.bytes.data(), 16);
  return kernel_.Ioctl(control_fd_, 0x40105603, &arg);
}

int RawBlksnap::Destroy(const Uuid& id) {
  blksnap_uuid arg{};
  std::memcpy(arg.b, id.bytes.data(), 16);
  return kernel_.Ioctl(control_fd_, 0x40105602, &arg);
}

int RawBlksnap::Attach(const std::string& device) { return Filter(device, 0, 0, nullptr, 0); }
int RawBlksnap::Detach(const std::string& device) { return Filter(device, 1, 0, nullptr, 0); }

int RawBlksnap::SnapshotInfo(const std::string& device, blksnap_snapshotinfo* info) {
  std::memset(info, 0, sizeof(*info));
  return Filter(device, 2, 4, info, sizeof(*info));
}

int RawBlksnap::CbtInfo(const std::string& device, blksnap_cbtinfo* info) {
  std::memset(info, 0, sizeof(*info));
  return Filter(device, 2, 0, info, sizeof(*info));
}

int RawBlksnap::Collect(std::vector<Uuid>* ids) {
  ids->clear();
  blksnap_snapshot_collect query{};
  if (int err = kernel_.Ioctl(control_fd_, 0x80105604, &query); err != 0) return err;
  if (query.count == 0) return 0;
  std::vector<blksnap_uuid> buffer(query.count);
  blksnap_snapshot_collect list{};
  list.count = query.count;
  list.ids = Ptr(buffer.data());
  if (int err = kernel_.Ioctl(control_fd_, 0x80105604, &list); err != 0) return err;
  for (uint32_t i = 0; i < list.count; ++i) {
    Uuid id;
    std::memcpy(id.bytes.data(), buffer[i].b, 16);
    ids->push_back(id);
  }
  return 0;
}

int RawBlksnap::Filter(const std::string& device, int op, uint32_t cmd, void* opt,
                       uint32_t optlen) {
  if (flavour_ == Flavour::kVal7) {
    int fd = -1;
    if (int err = kernel_.Open("/dev/bdevfilter", O_RDWR, &fd); err != 0) return err;
    int err = 0;
    if (op == 2) {
      bdevfilter_ctl arg{};
      arg.devpath = Ptr(device.c_str());
      Name(arg.name);
      arg.cmd = cmd;
      arg.optlen = optlen;
      arg.opt = Ptr(opt);
      err = kernel_.Ioctl(fd, 0xC038468E, &arg);
    } else {
      bdevfilter_name arg{};
      arg.devpath = Ptr(device.c_str());
      Name(arg.name);
      err = kernel_.Ioctl(fd, op == 0 ? 0xC028468C : 0xC028468D, &arg);
    }
    kernel_.Close(fd);
    return err;
  }
  int fd = -1;
  if (int err = kernel_.Open(device, O_RDONLY, &fd); err != 0) return err;
  int err = 0;
  const bool lk615 = flavour_ == Flavour::kLk615;
  if (op == 2) {
    blkfilter_ctl arg{};
    Name(arg.name);
    arg.cmd = cmd;
    arg.optlen = optlen;
    arg.opt = Ptr(opt);
    err = kernel_.Ioctl(fd, lk615 ? 0xC0301290 : 0xC030128E, &arg);
  } else if (lk615 && op == 0) {
    blkfilter_attach arg{};
    Name(arg.name);
    err = kernel_.Ioctl(fd, 0xC030128E, &arg);
  } else {
    blkfilter_name arg{};  // v7 attach/detach and lk6.15 detach share the 32-byte layout
    Name(arg.name);
    err = kernel_.Ioctl(fd, lk615 ? 0xC020128F : (op == 0 ? 0xC020128C : 0xC020128D), &arg);
  }
  kernel_.Close(fd);
  return err;
}

}  // namespace cbt::blksnap::testing
