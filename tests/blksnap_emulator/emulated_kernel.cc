#include "tests/blksnap_emulator/emulated_kernel.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/cbt_map.h"
#include "core/generation_id.h"

namespace cbt::blksnap::emulator {
namespace {

constexpr uint64_t kLocalClient = 0;
constexpr uint32_t kImageMajor = 259;  // block-ext, dynamic minors
constexpr uint32_t kMiscMajor = 10;
constexpr uint32_t kUpstreamControlMinor = 122;
constexpr uint32_t kVal7ControlMinor = 123;  // observed on the real VAL-7.0 module
constexpr uint32_t kVal7FilterMinor = 124;
constexpr uint32_t kDevtmpfsMajor = 0;
constexpr uint32_t kDevtmpfsMinor = 5;
constexpr uint64_t kSectorBytes = 512;
// diff_storage_minimum module parameter (sectors): growth step; growth starts at half of it.
constexpr uint64_t kDiffStorageMinimum = 2097152;
constexpr size_t kPathMax = 4096;  // strndup_user(…, PATH_MAX)
constexpr int kFirstFd = 1000;
constexpr int kMaxSymlinkHops = 40;

// VAL-7.0's BLKSNAP_MODIFICATION control ioctls (blksnap.md §4, blksnap-real-module.md §3
// rows 23–25). Not in uapi.h because the agent never sends them; emulated so that a VAL-7.0
// emulator answers them like the real module instead of ENOTTY.
struct blksnap_mod {
  uint64_t compatibility_flags;
  uint8_t name[32];
};
static_assert(sizeof(blksnap_mod) == 40);
struct blksnap_setlog {
  int32_t tz_minuteswest;
  int32_t level;
  uint32_t filepath_size;
  uint64_t filepath;
};
static_assert(sizeof(blksnap_setlog) == 24);
struct blksnap_snapshot_append_storage {
  blksnap_uuid id;
  uint64_t devpath;
  uint32_t count;
  uint64_t ranges;
};
static_assert(sizeof(blksnap_snapshot_append_storage) == 40);
constexpr unsigned long kVal7IoctlMod = _IOR('V', 32, blksnap_mod);
constexpr unsigned long kVal7IoctlSetlog = _IOW('V', 33, blksnap_setlog);
constexpr unsigned long kVal7IoctlAppendStorage = _IOW('V', 34, blksnap_snapshot_append_storage);
static_assert(kVal7IoctlMod == 0x80285620 && kVal7IoctlSetlog == 0x40185621 &&
              kVal7IoctlAppendStorage == 0x40285622);

int64_t MonotonicNanoseconds() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Lexical normalization of an absolute (or cwd-relative) path: no "//", "." or "..".
std::string NormalizePath(const std::string& path) {
  if (path.empty()) return path;
  std::string absolute = path;
  if (absolute[0] != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof(cwd)) != nullptr) absolute = std::string(cwd) + "/" + absolute;
  }
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= absolute.size()) {
    size_t end = absolute.find('/', start);
    if (end == std::string::npos) end = absolute.size();
    const std::string part = absolute.substr(start, end - start);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    start = end + 1;
  }
  std::string result;
  for (const std::string& part : parts) result += "/" + part;
  return result.empty() ? "/" : result;
}

std::string DirName(const std::string& normalized) {
  const size_t slash = normalized.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return normalized.substr(0, slash);
}

// strncmp(registered_name, name, 32) == 0 for the filter name "blksnap".
bool IsBlksnapName(const uint8_t* name) {
  return std::strncmp(kFilterName, reinterpret_cast<const char*>(name), kFilterNameLength) == 0;
}

struct Event {
  uint32_t code = 0;
  int64_t time = 0;
  std::string data;
};

struct Device;
struct Tracker;
struct Snapshot;

// struct diff_storage: one per snapshot, shared by the diff areas of all its devices.
struct DiffStorage {
  int fd = -1;                   // a tmpfile or regular file (owned)
  std::shared_ptr<Device> bdev;  // or an emulated block device (claimed exclusively)
  bool has_dev_id = false;       // the device holding the storage
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  uint64_t capacity = 0;   // sectors
  uint64_t limit = 0;      // sectors
  uint64_t filled = 0;     // sectors
  uint64_t requested = 0;  // sectors
  int low_space_flag = 0;
  bool overflow = false;
  bool closed = false;
  std::deque<Event> events;

  ~DiffStorage() {
    if (fd >= 0) ::close(fd);
  }
};

// struct diff_area: the copy-on-write state of one device in a taken snapshot.
struct DiffArea {
  std::shared_ptr<DiffStorage> storage;
  uint64_t capacity_sectors = 0;  // the device's capacity at take
  uint64_t chunk_sectors = 0;
  std::map<uint64_t, uint64_t> stored;  // chunk number -> first sector in the diff storage
  std::set<uint64_t> failed;            // chunks whose store failed (CHUNK_ST_FAILED)
  bool corrupted = false;
  int error_code = 0;  // negative errno
};

struct Image {
  std::string name;  // without /dev/
  uint32_t minor = 0;
};

// struct tracker: the blksnap filter attached to one device.
struct Tracker {
  std::weak_ptr<Device> device;
  uint32_t major = 0;
  uint32_t minor = 0;
  std::unique_ptr<CbtMap> cbt;
  Snapshot* snapshot = nullptr;  // non-null while on a snapshot's list (tracker->link)
  bool taken = false;            // snapshot_is_taken
  std::shared_ptr<DiffArea> diff_area;
  std::optional<Image> image;
};

struct Device {
  std::string path;
  uint64_t size = 0;  // bytes
  uint32_t major = 0;
  uint32_t minor = 0;
  int fd = -1;  // backing file
  bool dead = false;
  std::shared_ptr<Tracker> tracker;         // bd_filter
  const DiffStorage* claimed_by = nullptr;  // opened with BLK_OPEN_EXCL as diff storage

  ~Device() {
    if (fd >= 0) ::close(fd);
  }
};

struct Snapshot {
  blksnap_uuid id{};
  std::shared_ptr<DiffStorage> storage;
  std::vector<std::shared_ptr<Tracker>> trackers;
  bool taken = false;  // is_taken
};

enum class NodeKind { kNone, kControl, kBdevFilter, kDevice, kImage };

struct Node {
  NodeKind kind = NodeKind::kNone;
  std::string path;  // after following emulated symlinks
  std::shared_ptr<Device> device;
  std::shared_ptr<Tracker> image_tracker;
};

struct OpenFile {
  NodeKind kind = NodeKind::kNone;
  std::shared_ptr<Device> device;
  std::shared_ptr<Tracker> image_tracker;
  uint32_t image_minor = 0;
};

struct Client {
  int next_fd = kFirstFd;
  std::map<int, OpenFile> files;
};

bool ReadAll(int fd, uint64_t offset, char* out, size_t length) {
  size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, out + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) {  // past the end of the file: zeros
      std::memset(out + done, 0, length - done);
      return true;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

bool WriteAll(int fd, uint64_t offset, const char* data, size_t length) {
  size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pwrite(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

// stat(2) of a path outside the emulation. Host device nodes (block and character) are
// invisible: the emulated kernel owns every device, and a host /dev/loop0 must not show through
// where an emulated one was removed or never added.
int RealStat(const std::string& path, struct stat* st) {
  if (::stat(path.c_str(), st) != 0) return errno;
  if (S_ISBLK(st->st_mode) || S_ISCHR(st->st_mode)) return ENOENT;
  return 0;
}

blksnap_uuid ToBlksnapUuid(const Uuid& uuid) {
  blksnap_uuid id;
  std::memcpy(id.b, uuid.bytes.data(), sizeof(id.b));
  return id;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// User memory

int UserMemory::ReadString(uint64_t address, size_t max_length, std::string* out) {
  // Piece by piece, never across a page boundary, so a string that ends just before an
  // unmapped page is still read.
  constexpr uint64_t kPage = 4096;
  out->clear();
  char buffer[kPage];
  while (out->size() < max_length) {
    const uint64_t at = address + out->size();
    const size_t want = std::min<uint64_t>(kPage - at % kPage, max_length - out->size());
    if (!Read(at, buffer, want)) return EFAULT;
    if (const void* nul = std::memchr(buffer, 0, want); nul != nullptr) {
      out->append(buffer, static_cast<const char*>(nul) - buffer);
      return 0;
    }
    out->append(buffer, want);
  }
  return EINVAL;
}

int LocalMemory::ReadString(uint64_t address, size_t max_length, std::string* out) {
  if (address == 0) return EFAULT;
  const char* text = reinterpret_cast<const char*>(static_cast<uintptr_t>(address));
  const size_t length = strnlen(text, max_length);
  if (length == max_length) return EINVAL;
  out->assign(text, length);
  return 0;
}

bool LocalMemory::Read(uint64_t address, void* out, size_t length) {
  if (length == 0) return true;
  if (address == 0 || address + length < address) return false;
  std::memcpy(out, reinterpret_cast<const void*>(static_cast<uintptr_t>(address)), length);
  return true;
}

bool LocalMemory::Write(uint64_t address, const void* data, size_t length) {
  if (length == 0) return true;
  if (address == 0 || address + length < address) return false;
  std::memcpy(reinterpret_cast<void*>(static_cast<uintptr_t>(address)), data, length);
  return true;
}

ProcessMemory::ProcessMemory(pid_t pid) : pid_(pid) {}

bool ProcessMemory::Read(uint64_t address, void* out, size_t length) {
  if (length == 0) return true;
  struct iovec local = {out, length};
  struct iovec remote = {reinterpret_cast<void*>(static_cast<uintptr_t>(address)), length};
  const ssize_t n = ::process_vm_readv(pid_, &local, 1, &remote, 1, 0);
  return n == static_cast<ssize_t>(length);
}

bool ProcessMemory::Write(uint64_t address, const void* data, size_t length) {
  if (length == 0) return true;
  struct iovec local = {const_cast<void*>(data), length};
  struct iovec remote = {reinterpret_cast<void*>(static_cast<uintptr_t>(address)), length};
  const ssize_t n = ::process_vm_writev(pid_, &local, 1, &remote, 1, 0);
  return n == static_cast<ssize_t>(length);
}

// ---------------------------------------------------------------------------------------------
// Flavours

absl::StatusOr<Flavour> ParseFlavour(const std::string& text) {
  if (text == "lk6.15" || text == "lk615") return Flavour::kLk615;
  if (text == "v7") return Flavour::kV7;
  if (text == "val7" || text == "val7.0" || text == "VAL-7.0") return Flavour::kVal7;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown blksnap flavour '", text, "' (lk6.15, v7 or val7)"));
}

namespace {
constexpr const char* kIoctlKindNames[kIoctlKindCount] = {
    "other",   "version",  "create",   "destroy", "take",         "collect",       "wait_event",
    "attach",  "detach",   "cbt_info", "cbt_map", "cbt_dirty",    "snapshot_add",  "snapshot_info",
    "get_size"};
}  // namespace

const char* IoctlKindName(IoctlKind kind) {
  const auto index = static_cast<uint32_t>(kind);
  return index < kIoctlKindCount ? kIoctlKindNames[index] : "?";
}

absl::StatusOr<IoctlKind> ParseIoctlKind(const std::string& name) {
  for (uint32_t i = 0; i < kIoctlKindCount; ++i) {
    if (name == kIoctlKindNames[i]) return static_cast<IoctlKind>(i);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown ioctl kind '", name,
      "' (create, destroy, take, collect, wait_event, attach, detach, cbt_info, cbt_map, "
      "cbt_dirty, snapshot_add, snapshot_info, version, get_size, other)"));
}

const char* FlavourName(Flavour flavour) {
  switch (flavour) {
    case Flavour::kLk615:
      return "lk6.15";
    case Flavour::kV7:
      return "v7";
    case Flavour::kVal7:
      return "val7";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// The emulated kernel

struct EmulatedKernel::Impl {
  explicit Impl(EmulatorOptions opts) : options(std::move(opts)) {
    if (options.chunk_size < kSectorBytes || options.chunk_size % kSectorBytes != 0) {
      options.chunk_size = 256 * 1024;
    }
    backing_dir = options.backing_dir;
    if (backing_dir.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      backing_dir = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
    }
  }

  EmulatorOptions options;
  std::string backing_dir;

  std::mutex mu;
  std::condition_variable events_cv;   // an event was queued, or shutdown
  std::condition_variable waiters_cv;  // a WAIT_EVENT caller left
  int active_waiters = 0;
  bool shutting_down = false;

  std::map<std::string, std::shared_ptr<Device>> devices;  // by normalized path
  std::map<std::string, std::string> symlinks;             // normalized link -> target
  struct Mount {
    std::string directory;  // realpath
    uint32_t major = 0;
    uint32_t minor = 0;
  };
  std::vector<Mount> mounts;
  std::map<std::string, std::shared_ptr<Tracker>> images;  // "/dev/<image name>"
  std::vector<std::shared_ptr<Snapshot>> snapshots;        // creation order
  std::map<uint64_t, Client> clients;
  LocalMemory local_memory;

  Flavour flavour() const { return options.flavour; }
  uint64_t reserved_sectors() const {
    return options.diff_storage_reserved_bytes / kSectorBytes;
  }

  std::string ControlPath() const {
    return flavour() == Flavour::kVal7 ? kVal7ControlDevice : kUpstreamControlDevice;
  }

  std::string ImageName(uint32_t major, uint32_t minor) const {
    switch (flavour()) {
      case Flavour::kLk615:
        return absl::StrFormat("blksnap-%u-%u", major, minor);
      case Flavour::kV7:
        return absl::StrFormat("blksnap-image_%u:%u", major, minor);
      case Flavour::kVal7:
        return absl::StrFormat("veeamblksnapimg_%u:%u", major, minor);
    }
    return "";
  }

  // ---- names ----

  int ResolveLocked(const std::string& path, Node* node) {
    *node = Node{};
    if (path.empty()) return 0;  // falls through to the real file system: ENOENT
    std::string current = NormalizePath(path);
    for (int hops = 0;; ++hops) {
      auto it = symlinks.find(current);
      if (it == symlinks.end()) break;
      if (hops >= kMaxSymlinkHops) return ELOOP;
      std::string target = it->second;
      if (target.empty()) return ENOENT;
      if (target[0] != '/') target = DirName(current) + "/" + target;
      current = NormalizePath(target);
    }
    node->path = current;
    if (current == ControlPath()) {
      node->kind = NodeKind::kControl;
    } else if (flavour() == Flavour::kVal7 && current == kVal7FilterDevice) {
      node->kind = NodeKind::kBdevFilter;
    } else if (auto it = devices.find(current); it != devices.end()) {
      node->kind = NodeKind::kDevice;
      node->device = it->second;
    } else if (auto image = images.find(current); image != images.end()) {
      node->kind = NodeKind::kImage;
      node->image_tracker = image->second;
    }
    return 0;
  }

  bool IsEmulatedName(const std::string& normalized) const {
    return normalized == kUpstreamControlDevice || normalized == kVal7ControlDevice ||
           normalized == kVal7FilterDevice || devices.count(normalized) != 0 ||
           symlinks.count(normalized) != 0 || images.count(normalized) != 0;
  }

  int StatLocked(const std::string& path, FileStatus* status) {
    Node node;
    if (int error = ResolveLocked(path, &node); error != 0) return error;
    *status = FileStatus{};
    switch (node.kind) {
      case NodeKind::kControl:
        status->rdev_major = kMiscMajor;
        status->rdev_minor =
            flavour() == Flavour::kVal7 ? kVal7ControlMinor : kUpstreamControlMinor;
        status->dev_major = kDevtmpfsMajor;
        status->dev_minor = kDevtmpfsMinor;
        return 0;
      case NodeKind::kBdevFilter:
        status->rdev_major = kMiscMajor;
        status->rdev_minor = kVal7FilterMinor;
        status->dev_major = kDevtmpfsMajor;
        status->dev_minor = kDevtmpfsMinor;
        return 0;
      case NodeKind::kDevice:
        status->is_block_device = true;
        status->rdev_major = node.device->major;
        status->rdev_minor = node.device->minor;
        status->dev_major = kDevtmpfsMajor;
        status->dev_minor = kDevtmpfsMinor;
        return 0;
      case NodeKind::kImage:
        status->is_block_device = true;
        status->rdev_major = kImageMajor;
        status->rdev_minor = node.image_tracker->image ? node.image_tracker->image->minor : 0;
        status->dev_major = kDevtmpfsMajor;
        status->dev_minor = kDevtmpfsMinor;
        return 0;
      case NodeKind::kNone:
        break;
    }
    struct stat st;
    if (int error = RealStat(node.path, &st); error != 0) return error;
    *status = ToFileStatus(st);
    // Emulated mounts: the longest mount directory containing the file decides its device.
    char real[PATH_MAX];
    if (!mounts.empty() && ::realpath(node.path.c_str(), real) != nullptr) {
      const std::string resolved = real;
      size_t best = 0;
      for (const Mount& mount : mounts) {
        const std::string& dir = mount.directory;
        const bool inside = resolved == dir || dir == "/" ||
                            (resolved.size() > dir.size() && resolved.compare(0, dir.size(), dir) == 0 &&
                             resolved[dir.size()] == '/');
        if (inside && dir.size() + 1 > best) {
          best = dir.size() + 1;
          status->dev_major = mount.major;
          status->dev_minor = mount.minor;
        }
      }
    }
    return 0;
  }

  // lookup_bdev()/bdev_file_open_by_path() for a path given to the kernel.
  int OpenBdevByPathLocked(const std::string& path, std::shared_ptr<Device>* device) {
    Node node;
    if (int error = ResolveLocked(path, &node); error != 0) return error;
    switch (node.kind) {
      case NodeKind::kDevice:
        *device = node.device;
        return 0;
      case NodeKind::kImage:
        return EOPNOTSUPP;  // filtering a snapshot image is not emulated
      case NodeKind::kControl:
      case NodeKind::kBdevFilter:
        return ENOTBLK;
      case NodeKind::kNone:
        break;
    }
    struct stat st;
    if (int error = RealStat(node.path, &st); error != 0) return error;
    return ENOTBLK;
  }

  // strndup_user(ptr, PATH_MAX).
  static int ReadUserString(UserMemory& memory, uint64_t address, std::string* out) {
    return memory.ReadString(address, kPathMax, out);
  }

  // ---- trackers ----

  int AttachLocked(const std::shared_ptr<Device>& device) {
    auto cbt = CbtMap::Create(device->size / kSectorBytes, options.tracking);
    if (!cbt.ok()) return ENOMEM;
    auto tracker = std::make_shared<Tracker>();
    tracker->device = device;
    tracker->major = device->major;
    tracker->minor = device->minor;
    tracker->cbt = std::move(*cbt);
    device->tracker = std::move(tracker);
    return 0;
  }

  // tracker_detach(): the filter lets go; a snapshot holding the tracker keeps it alive.
  static void DetachLocked(Device& device) { device.tracker.reset(); }

  // ---- events ----

  void PushEventLocked(DiffStorage& storage, uint32_t code, const void* data, size_t size) {
    Event event;
    event.code = code;
    event.time = MonotonicNanoseconds();
    event.data.assign(static_cast<const char*>(data), size);
    storage.events.push_back(std::move(event));
    events_cv.notify_all();
  }

  void SetCorruptedLocked(const Tracker& tracker, DiffArea& area, int error_code) {
    if (area.corrupted) return;
    area.corrupted = true;
    area.error_code = error_code;
    blksnap_event_corrupted data{};
    data.dev_id_mj = tracker.major;
    data.dev_id_mn = tracker.minor;
    data.err_code = std::abs(error_code);
    PushEventLocked(*area.storage, kEventCorrupted, &data, sizeof(data));
  }

  // ---- diff storage ----

  static void CloseStorageLocked(DiffStorage& storage) {
    if (storage.fd >= 0) {
      ::close(storage.fd);
      storage.fd = -1;
    }
    if (storage.bdev) {
      storage.bdev->claimed_by = nullptr;
      storage.bdev.reset();
    }
    storage.closed = true;
  }

  static bool IsHalfFull(uint64_t sectors_left) {
    return sectors_left <= kDiffStorageMinimum / 2;
  }

  // diff_storage_set_diff_storage().
  int SetDiffStorageLocked(const std::string& filename, uint64_t limit,
                           std::shared_ptr<DiffStorage>* out) {
    auto storage = std::make_shared<DiffStorage>();
    Node node;
    if (int error = ResolveLocked(filename, &node); error != 0) return error;
    switch (node.kind) {
      case NodeKind::kDevice: {
        if (node.device->claimed_by != nullptr) return EBUSY;
        node.device->claimed_by = storage.get();
        storage->bdev = node.device;
        storage->has_dev_id = true;
        storage->dev_major = node.device->major;
        storage->dev_minor = node.device->minor;
        storage->capacity = node.device->size / kSectorBytes;
        break;
      }
      case NodeKind::kImage:      // not emulated
      case NodeKind::kControl:    // character devices
      case NodeKind::kBdevFilter:
        return EINVAL;
      case NodeKind::kNone: {
        struct stat st;
        if (int error = RealStat(node.path, &st); error != 0) return error;
        int fd;
        if (S_ISDIR(st.st_mode)) {
          fd = ::open(node.path.c_str(), O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
        } else if (S_ISREG(st.st_mode)) {
          fd = ::open(node.path.c_str(), O_RDWR | O_CLOEXEC);
        } else {
          return EINVAL;  // "should be a block device, directory or regular file"
        }
        if (fd < 0) return errno;
        storage->fd = fd;
        FileStatus status;
        if (StatLocked(node.path, &status) == 0) {
          storage->has_dev_id = true;
          storage->dev_major = status.dev_major;
          storage->dev_minor = status.dev_minor;
        }
        struct stat file_st;
        if (::fstat(fd, &file_st) != 0) {
          const int error = errno;
          CloseStorageLocked(*storage);
          return error;
        }
        storage->capacity = static_cast<uint64_t>(file_st.st_size) / kSectorBytes;
        break;
      }
    }
    storage->filled = reserved_sectors();
    storage->requested = storage->capacity;
    storage->limit = limit;
    if (IsHalfFull(storage->requested) && storage->capacity != storage->limit) {
      if (storage->capacity > storage->limit) {
        CloseStorageLocked(*storage);
        return ENOSPC;
      }
      storage->requested += std::min(kDiffStorageMinimum, storage->limit - storage->capacity);
      if (!storage->bdev) {  // a block device is not grown (the kernel only warns)
        if (::ftruncate(storage->fd, static_cast<off_t>(storage->requested * kSectorBytes)) !=
            0) {
          const int error = errno;
          CloseStorageLocked(*storage);
          return error;
        }
        storage->capacity = storage->requested;
      }
    }
    *out = std::move(storage);
    return 0;
  }

  // check_halffull() with the reallocation worker run synchronously.
  void CheckHalfFullLocked(DiffStorage& storage, uint64_t sectors_left) {
    if (!IsHalfFull(sectors_left)) return;
    if (++storage.low_space_flag != 1) return;
    if (storage.bdev) return;  // "free space … on the block device is running out"
    if (storage.capacity >= storage.limit) {
      // diff_storage_calculate_requested() failed: the limit is reached.
      if (flavour() == Flavour::kLk615) {
        blksnap_event_no_space data{};
        data.requested_nr_sect = storage.requested;
        PushEventLocked(storage, kEventNoSpace, &data, sizeof(data));
      }
      return;
    }
    storage.requested += std::min(kDiffStorageMinimum, storage.limit - storage.capacity);
    if (storage.fd >= 0 &&
        ::ftruncate(storage.fd, static_cast<off_t>(storage.requested * kSectorBytes)) == 0) {
      storage.capacity = storage.requested;
      storage.low_space_flag = 0;
    }
  }

  // diff_storage_alloc().
  int AllocLocked(DiffStorage& storage, uint64_t count, uint64_t* sector) {
    if (storage.overflow) return ENOSPC;
    if (storage.filled + count > storage.requested) {
      storage.overflow = true;
      return ENOSPC;
    }
    *sector = storage.filled;
    storage.filled += count;
    CheckHalfFullLocked(storage, storage.requested - storage.filled);
    return 0;
  }

  int StorageWriteLocked(DiffStorage& storage, uint64_t offset, const char* data, size_t length) {
    if (storage.closed) return EIO;
    if (storage.bdev) {
      return WriteOriginLocked(storage.bdev, offset, data, length) == 0 ? 0 : EIO;
    }
    if (storage.fd < 0) return EIO;
    return WriteAll(storage.fd, offset, data, length) ? 0 : EIO;
  }

  int StorageReadLocked(DiffStorage& storage, uint64_t offset, char* out, size_t length) {
    if (storage.closed) return EIO;
    if (storage.bdev) {
      if (storage.bdev->dead || offset + length > storage.bdev->size) return EIO;
      return ReadAll(storage.bdev->fd, offset, out, length) ? 0 : EIO;
    }
    if (storage.fd < 0) return EIO;
    return ReadAll(storage.fd, offset, out, length) ? 0 : EIO;
  }

  // ---- data path ----

  // Stores chunk `number` (its data in `data`) into the diff storage.
  int StoreChunkLocked(DiffArea& area, uint64_t number, const std::string& data) {
    uint64_t sector = 0;
    if (int error = AllocLocked(*area.storage, data.size() / kSectorBytes, &sector); error != 0) {
      return error;
    }
    if (int error = StorageWriteLocked(*area.storage, sector * kSectorBytes, data.data(),
                                       data.size());
        error != 0) {
      return error;
    }
    area.stored[number] = sector;
    return 0;
  }

  // Reads chunk `number` of the origin (as far as the capacity at take reaches).
  bool LoadChunkLocked(const Device& device, const DiffArea& area, uint64_t number,
                       std::string* data) {
    const uint64_t start = number * area.chunk_sectors;
    const uint64_t sectors = std::min(area.chunk_sectors, area.capacity_sectors - start);
    data->assign(sectors * kSectorBytes, '\0');
    if (device.dead) return false;
    return ReadAll(device.fd, start * kSectorBytes, data->data(), data->size());
  }

  // diff_area_cow(): copy every not yet copied chunk of [sector, sector + count) before a write.
  void CowLocked(Tracker& tracker, const Device& device, uint64_t sector, uint64_t count) {
    std::shared_ptr<DiffArea> area = tracker.diff_area;
    const uint64_t first = sector / area->chunk_sectors;
    const uint64_t last = (sector + count - 1) / area->chunk_sectors;
    for (uint64_t number = first; number <= last; ++number) {
      if (number * area->chunk_sectors >= area->capacity_sectors) break;
      if (area->stored.count(number) != 0 || area->failed.count(number) != 0) continue;
      std::string data;
      int error = LoadChunkLocked(device, *area, number, &data) ? 0 : EIO;
      if (error == 0) error = StoreChunkLocked(*area, number, data);
      if (error != 0) {
        area->failed.insert(number);
        SetCorruptedLocked(tracker, *area, -error);
        return;
      }
    }
  }

  // A write bio on the original device going through its filter (tracker_submit_bio()).
  // Returns 0 or EIO.
  int WriteOriginLocked(const std::shared_ptr<Device>& device, uint64_t offset, const char* data,
                        size_t length) {
    if (device->dead || offset + length > device->size || offset + length < offset) return EIO;
    if (length == 0) return 0;
    if (std::shared_ptr<Tracker> tracker = device->tracker) {
      const uint64_t sector = offset / kSectorBytes;
      const uint64_t count = (offset + length + kSectorBytes - 1) / kSectorBytes - sector;
      // As in the kernel: a failed CBT mark (corrupted map) skips copy-on-write too.
      if (tracker->cbt->Set(sector, count).ok() && tracker->taken && tracker->diff_area &&
          !tracker->diff_area->corrupted) {
        CowLocked(*tracker, *device, sector, count);
      }
    }
    return WriteAll(device->fd, offset, data, length) ? 0 : EIO;
  }

  absl::Status ImageUsableLocked(const Tracker& tracker, std::shared_ptr<Device>* device) {
    if (!tracker.image || !tracker.diff_area) return absl::NotFoundError("the image is gone");
    if (tracker.diff_area->corrupted) {
      return absl::DataLossError(absl::StrCat("EIO: the snapshot image is corrupted (error ",
                                              tracker.diff_area->error_code, ")"));
    }
    *device = tracker.device.lock();
    if (!*device || (*device)->dead) {
      return absl::DataLossError("EIO: the original device of the image was removed");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ReadImageLocked(Tracker& tracker, uint64_t offset,
                                              uint64_t length) {
    std::shared_ptr<Device> device;
    if (absl::Status status = ImageUsableLocked(tracker, &device); !status.ok()) return status;
    DiffArea& area = *tracker.diff_area;
    const uint64_t capacity = area.capacity_sectors * kSectorBytes;
    if (offset > capacity || length > capacity - offset) {
      return absl::OutOfRangeError(absl::StrCat("read of ", length, " bytes at ", offset,
                                                " beyond the image of ", capacity, " bytes"));
    }
    std::string out(length, '\0');
    const uint64_t chunk_bytes = area.chunk_sectors * kSectorBytes;
    uint64_t done = 0;
    while (done < length) {
      const uint64_t position = offset + done;
      const uint64_t number = position / chunk_bytes;
      const uint64_t in_chunk = position - number * chunk_bytes;
      const uint64_t piece = std::min(length - done, chunk_bytes - in_chunk);
      if (area.failed.count(number) != 0) {
        return absl::DataLossError(absl::StrCat("EIO: chunk #", number, " is corrupted"));
      }
      if (auto it = area.stored.find(number); it != area.stored.end()) {
        if (StorageReadLocked(*area.storage, it->second * kSectorBytes + in_chunk,
                              out.data() + done, piece) != 0) {
          return absl::DataLossError("EIO: reading the difference storage failed");
        }
      } else if (!ReadAll(device->fd, position, out.data() + done, piece)) {
        return absl::DataLossError("EIO: reading the original device failed");
      }
      done += piece;
    }
    return out;
  }

  absl::Status WriteImageLocked(Tracker& tracker, uint64_t offset, const std::string& data) {
    std::shared_ptr<Device> device;
    if (absl::Status status = ImageUsableLocked(tracker, &device); !status.ok()) return status;
    std::shared_ptr<DiffArea> area = tracker.diff_area;
    const uint64_t capacity = area->capacity_sectors * kSectorBytes;
    if (offset > capacity || data.size() > capacity - offset) {
      return absl::OutOfRangeError(absl::StrCat("write of ", data.size(), " bytes at ", offset,
                                                " beyond the image of ", capacity, " bytes"));
    }
    if (data.empty()) return absl::OkStatus();
    const uint64_t sector = offset / kSectorBytes;
    const uint64_t count = (offset + data.size() + kSectorBytes - 1) / kSectorBytes - sector;
    // snapimage_submit_bio(): the image differs from the original from now on; the result of
    // cbt_map_set_both() is ignored there.
    (void)tracker.cbt->SetBoth(sector, count);
    const uint64_t chunk_bytes = area->chunk_sectors * kSectorBytes;
    uint64_t done = 0;
    while (done < data.size()) {
      const uint64_t position = offset + done;
      const uint64_t number = position / chunk_bytes;
      const uint64_t in_chunk = position - number * chunk_bytes;
      const uint64_t piece = std::min<uint64_t>(data.size() - done, chunk_bytes - in_chunk);
      if (area->failed.count(number) != 0) {
        return absl::DataLossError(absl::StrCat("EIO: chunk #", number, " is corrupted"));
      }
      auto it = area->stored.find(number);
      if (it == area->stored.end()) {
        // A new chunk: load it from the original, apply the write, store it.
        std::string chunk;
        int error = LoadChunkLocked(*device, *area, number, &chunk) ? 0 : EIO;
        if (error == 0) {
          std::memcpy(chunk.data() + in_chunk, data.data() + done, piece);
          error = StoreChunkLocked(*area, number, chunk);
        }
        if (error != 0) {
          area->failed.insert(number);
          SetCorruptedLocked(tracker, *area, -error);
          return absl::DataLossError(
              absl::StrCat("EIO: storing chunk #", number, " failed: ", std::strerror(error)));
        }
      } else if (StorageWriteLocked(*area->storage, it->second * kSectorBytes + in_chunk,
                                    data.data() + done, piece) != 0) {
        return absl::DataLossError("EIO: writing the difference storage failed");
      }
      done += piece;
    }
    return absl::OkStatus();
  }

  // ---- snapshots ----

  std::shared_ptr<Snapshot> FindSnapshotLocked(const blksnap_uuid& id) {
    for (const auto& snapshot : snapshots) {
      if (std::memcmp(snapshot->id.b, id.b, sizeof(id.b)) == 0) return snapshot;
    }
    return nullptr;
  }

  void ReleaseTrackerSnapshotLocked(Tracker& tracker) {
    if (!tracker.diff_area) return;
    if (tracker.image) {
      images.erase("/dev/" + tracker.image->name);
      tracker.image.reset();
    }
    tracker.taken = false;
    tracker.diff_area.reset();
  }

  uint32_t AllocateImageMinorLocked() {
    std::set<uint32_t> used;
    for (const auto& [path, tracker] : images) {
      if (tracker->image) used.insert(tracker->image->minor);
    }
    for (const auto& [path, device] : devices) {
      if (device->major == kImageMajor) used.insert(device->minor);
    }
    uint32_t minor = 0;
    while (used.count(minor) != 0) ++minor;
    return minor;
  }

  int TakeLocked(Snapshot& snapshot) {
    // snapshot_take_trackers()
    if (snapshot.trackers.empty()) return ENODEV;
    int ret = 0;
    for (const auto& tracker : snapshot.trackers) {
      std::shared_ptr<Device> device = tracker->device.lock();
      if (!device || device->dead) {  // the emulator cannot snapshot a removed device
        ret = ENODEV;
        break;
      }
      auto area = std::make_shared<DiffArea>();
      area->storage = snapshot.storage;
      area->capacity_sectors = device->size / kSectorBytes;
      area->chunk_sectors = options.chunk_size / kSectorBytes;
      tracker->diff_area = std::move(area);
    }
    if (ret == 0) {
      // Freeze: a no-op here. Switch the CBT tables and enable copy-on-write.
      for (const auto& tracker : snapshot.trackers) {
        const uint64_t capacity = tracker->diff_area->capacity_sectors;
        if (tracker->cbt->corrupted() || tracker->cbt->geometry().capacity_sectors != capacity) {
          if (!tracker->cbt->Reset(capacity).ok()) {
            ret = ENOMEM;
            break;
          }
        }
        tracker->cbt->Switch();
        tracker->taken = true;
      }
      if (ret == 0) snapshot.taken = true;
    }
    if (ret == 0) {
      // snapshot_take_images()
      for (const auto& tracker : snapshot.trackers) {
        const std::string name = ImageName(tracker->major, tracker->minor);
        if (images.count("/dev/" + name) != 0) {
          ret = EEXIST;  // add_disk() with a name in use
          break;
        }
        tracker->image = Image{name, AllocateImageMinorLocked()};
        images["/dev/" + name] = tracker;
      }
    }
    if (ret != 0) {
      for (const auto& tracker : snapshot.trackers) {
        ReleaseTrackerSnapshotLocked(*tracker);
        tracker->diff_area.reset();
        tracker->taken = false;
      }
    }
    return ret;
  }

  // ---- filter ctl (tracker_ctl) ----

  int DirtyRangeLocked(CbtMap& cbt, uint64_t sector, uint64_t count) {
    // cbt_map_set_both(): block indexes are computed with wrapping arithmetic
    // (last = (sector + count - 1) >> shift); the write map is marked up to the first block
    // past the map, which fails with EINVAL and leaves the read map alone.
    if (cbt.corrupted()) return EINVAL;
    const TrackingGeometry geometry = cbt.geometry();
    const uint32_t shift = geometry.sectors_per_block_shift();
    const uint64_t first = sector >> shift;
    const uint64_t last = (sector + count - 1) >> shift;
    if (last < first) return 0;
    if (last >= geometry.block_count) {
      if (first < geometry.block_count) {
        (void)cbt.Set(first << shift, (geometry.block_count - first) << shift);
      }
      return EINVAL;
    }
    return cbt.SetBoth(first << shift, (last - first + 1) << shift).ok() ? 0 : EINVAL;
  }

  int SnapshotAddLocked(const std::shared_ptr<Tracker>& tracker, const blksnap_uuid& id) {
    std::shared_ptr<Snapshot> snapshot = FindSnapshotLocked(id);
    if (!snapshot) return ESRCH;
    const DiffStorage& storage = *snapshot->storage;
    if (storage.has_dev_id && storage.dev_major == tracker->major &&
        storage.dev_minor == tracker->minor) {
      // "The block device … is already being used as difference storage": logged, returns 0.
      return 0;
    }
    for (const auto& member : snapshot->trackers) {
      if (member == tracker || (member->major == tracker->major && member->minor == tracker->minor)) {
        return EALREADY;
      }
    }
    if (tracker->snapshot != nullptr) return EBUSY;
    tracker->snapshot = snapshot.get();
    snapshot->trackers.push_back(tracker);
    return 0;
  }

  int FilterCtlLocked(UserMemory& memory, const std::shared_ptr<Tracker>& tracker, uint32_t cmd,
                      uint64_t opt, uint32_t optlen) {
    CbtMap& cbt = *tracker->cbt;
    switch (cmd) {
      case kCtlCbtInfo: {
        if (optlen < sizeof(blksnap_cbtinfo)) return EINVAL;
        const CbtInfo info = cbt.Info();
        blksnap_cbtinfo arg;
        std::memset(&arg, 0, sizeof(arg));
        arg.device_capacity = info.capacity_bytes;
        arg.block_size = info.block_size;
        arg.block_count = static_cast<uint32_t>(info.block_count);
        std::memcpy(arg.generation_id.b, info.generation_id.bytes.data(), 16);
        arg.changes_number = info.changes_number;
        return memory.Write(opt, &arg, sizeof(arg)) ? 0 : ENODATA;
      }
      case kCtlCbtMap: {
        if (cbt.corrupted()) return EFAULT;
        if (optlen < sizeof(blksnap_cbtmap)) return EINVAL;
        blksnap_cbtmap arg;
        if (!memory.Read(opt, &arg, sizeof(arg))) return ENODATA;
        const uint64_t count = cbt.geometry().block_count;
        if (arg.offset > count || arg.length > count - arg.offset) return ENODATA;
        std::vector<uint8_t> bytes(arg.length);
        if (absl::Status status = cbt.ReadMap(arg.offset, arg.length, bytes.data());
            !status.ok()) {
          return status.code() == absl::StatusCode::kDataLoss ? EFAULT : ENODATA;
        }
        return memory.Write(arg.buffer, bytes.data(), bytes.size()) ? 0 : EINVAL;
      }
      case kCtlCbtDirty: {
        if (optlen < sizeof(blksnap_cbtdirty)) return EINVAL;
        blksnap_cbtdirty arg;
        if (!memory.Read(opt, &arg, sizeof(arg))) return ENODATA;
        for (uint32_t i = 0; i < arg.count; ++i) {
          blksnap_sectors range;
          if (!memory.Read(arg.dirty_sectors + uint64_t{i} * sizeof(range), &range,
                           sizeof(range))) {
            return ENODATA;
          }
          if (int error = DirtyRangeLocked(cbt, range.offset, range.count); error != 0) {
            return error;
          }
        }
        return 0;
      }
      case kCtlSnapshotAdd: {
        if (optlen < sizeof(blksnap_snapshotadd)) return EINVAL;
        blksnap_snapshotadd arg;
        if (!memory.Read(opt, &arg, sizeof(arg))) return ENODATA;
        return SnapshotAddLocked(tracker, arg.id);
      }
      case kCtlSnapshotInfo: {
        if (optlen < sizeof(blksnap_snapshotinfo)) return EINVAL;
        // The struct is copied in first: image bytes are left as the caller had them unless
        // an image exists (strscpy does not pad).
        blksnap_snapshotinfo arg;
        if (!memory.Read(opt, &arg, sizeof(arg))) return ENODATA;
        arg.error_code = (tracker->diff_area && tracker->diff_area->corrupted)
                             ? tracker->diff_area->error_code
                             : 0;
        if (tracker->image) {
          const size_t n = std::min(tracker->image->name.size(), kImageDiskNameLength - 1);
          std::memcpy(arg.image, tracker->image->name.data(), n);
          arg.image[n] = 0;
        }
        return memory.Write(opt, &arg, sizeof(arg)) ? 0 : ENODATA;
      }
      default:
        return ENOTTY;
    }
  }

  // ---- block-device ioctls (lk6.15 and v7 filter framework) ----

  int DeviceIoctlLocked(UserMemory& memory, const std::shared_ptr<Device>& device,
                        unsigned long request, uint64_t arg) {
    if (request == kBlkGetSize64) {
      const uint64_t size = device->dead ? 0 : device->size;
      return memory.Write(arg, &size, sizeof(size)) ? 0 : EFAULT;
    }
    size_t attach_size = 0;
    size_t detach_size = 0;
    unsigned long attach = 0, detach = 0, ctl = 0;
    switch (flavour()) {
      case Flavour::kLk615:
        attach = kLk615BlkfilterAttach;
        detach = kLk615BlkfilterDetach;
        ctl = kLk615BlkfilterCtl;
        attach_size = sizeof(blkfilter_attach);
        detach_size = sizeof(blkfilter_detach);
        break;
      case Flavour::kV7:
        attach = kV7BlkfilterAttach;
        detach = kV7BlkfilterDetach;
        ctl = kV7BlkfilterCtl;
        attach_size = sizeof(blkfilter_name);
        detach_size = sizeof(blkfilter_name);
        break;
      case Flavour::kVal7:  // filters are driven through /dev/bdevfilter
        return ENOTTY;
    }
    if (request == attach) {
      uint8_t buffer[sizeof(blkfilter_attach)];
      if (!memory.Read(arg, buffer, attach_size)) return EFAULT;
      if (!IsBlksnapName(buffer)) return ENOENT;  // the name is at offset 0 in both layouts
      if (device->dead) return ENODEV;
      if (device->tracker) return EALREADY;
      return AttachLocked(device);
    }
    if (request == detach) {
      uint8_t buffer[sizeof(blkfilter_name)];
      if (!memory.Read(arg, buffer, detach_size)) return EFAULT;
      if (device->dead) return ENODEV;
      if (!device->tracker) return ENOENT;
      if (!IsBlksnapName(buffer)) return EINVAL;
      DetachLocked(*device);
      return 0;
    }
    if (request == ctl) {
      blkfilter_ctl arg_ctl;
      if (!memory.Read(arg, &arg_ctl, sizeof(arg_ctl))) return EFAULT;
      if (device->dead) return ENODEV;
      std::shared_ptr<Tracker> tracker = device->tracker;
      if (!tracker) return ENOENT;
      if (!IsBlksnapName(arg_ctl.name)) return EINVAL;
      return FilterCtlLocked(memory, tracker, arg_ctl.cmd, arg_ctl.opt, arg_ctl.optlen);
    }
    return ENOTTY;
  }

  int ImageIoctlLocked(UserMemory& memory, const OpenFile& file, unsigned long request,
                       uint64_t arg) {
    if (request == kBlkGetSize64) {
      const Tracker& tracker = *file.image_tracker;
      uint64_t size = 0;
      if (tracker.image && tracker.image->minor == file.image_minor && tracker.diff_area) {
        size = tracker.diff_area->capacity_sectors * kSectorBytes;
      }
      return memory.Write(arg, &size, sizeof(size)) ? 0 : EFAULT;
    }
    if (flavour() == Flavour::kLk615 &&
        (request == kLk615BlkfilterAttach || request == kLk615BlkfilterDetach ||
         request == kLk615BlkfilterCtl)) {
      return EOPNOTSUPP;  // filters on snapshot images are not emulated
    }
    if (flavour() == Flavour::kV7 &&
        (request == kV7BlkfilterAttach || request == kV7BlkfilterDetach ||
         request == kV7BlkfilterCtl)) {
      return EOPNOTSUPP;
    }
    return ENOTTY;
  }

  // ---- /dev/bdevfilter (VAL-7.0) ----

  int BdevFilterIoctlLocked(UserMemory& memory, unsigned long request, uint64_t arg) {
    if (request == kVal7BdevfilterAttach || request == kVal7BdevfilterDetach) {
      bdevfilter_name karg;
      if (!memory.Read(arg, &karg, sizeof(karg))) return EFAULT;
      std::string devpath;
      if (int error = ReadUserString(memory, karg.devpath, &devpath); error != 0) return error;
      std::shared_ptr<Device> device;
      if (int error = OpenBdevByPathLocked(devpath, &device); error != 0) return error;
      if (request == kVal7BdevfilterAttach) {
        if (!IsBlksnapName(karg.name)) return ENOENT;
        if (device->dead) return ENODEV;
        if (device->tracker) return EALREADY;
        return AttachLocked(device);
      }
      if (device->dead) return ENODEV;
      if (!device->tracker) return ENOENT;
      if (!IsBlksnapName(karg.name)) return EINVAL;
      DetachLocked(*device);
      return 0;
    }
    if (request == kVal7BdevfilterCtl) {
      bdevfilter_ctl karg;
      if (!memory.Read(arg, &karg, sizeof(karg))) return EFAULT;
      std::string devpath;
      if (int error = ReadUserString(memory, karg.devpath, &devpath); error != 0) return error;
      std::shared_ptr<Device> device;
      if (int error = OpenBdevByPathLocked(devpath, &device); error != 0) return error;
      if (device->dead) return ENODEV;
      std::shared_ptr<Tracker> tracker = device->tracker;
      // bdevfilter answers a missing filter and a name mismatch alike.
      if (!tracker || !IsBlksnapName(karg.name)) return ENOENT;
      return FilterCtlLocked(memory, tracker, karg.cmd, karg.opt, karg.optlen);
    }
    return ENOTTY;
  }

  // ---- control device ----

  int ControlIoctlLocked(std::unique_lock<std::mutex>& lock, UserMemory& memory,
                         unsigned long request, uint64_t arg) {
    if (request == kIoctlVersion) {
      blksnap_version version{};
      version.major = flavour() == Flavour::kVal7 ? 7 : 2;
      return memory.Write(arg, &version, sizeof(version)) ? 0 : ENODATA;
    }
    if (request == kIoctlSnapshotCreate) return CreateLocked(memory, arg);
    if (request == kIoctlSnapshotDestroy) {
      blksnap_uuid id;
      if (!memory.Read(arg, &id, sizeof(id))) return ENODATA;
      auto it = std::find_if(snapshots.begin(), snapshots.end(), [&](const auto& snapshot) {
        return std::memcmp(snapshot->id.b, id.b, sizeof(id.b)) == 0;
      });
      if (it == snapshots.end()) return ENODEV;
      std::shared_ptr<Snapshot> snapshot = *it;
      snapshots.erase(it);
      for (const auto& tracker : snapshot->trackers) {
        ReleaseTrackerSnapshotLocked(*tracker);
        tracker->snapshot = nullptr;
      }
      snapshot->trackers.clear();
      CloseStorageLocked(*snapshot->storage);  // queued events stay for in-flight waiters
      return 0;
    }
    if (request == kIoctlSnapshotTake) {
      blksnap_uuid id;
      if (!memory.Read(arg, &id, sizeof(id))) return ENODATA;
      std::shared_ptr<Snapshot> snapshot = FindSnapshotLocked(id);
      if (!snapshot) return ESRCH;
      if (snapshot->taken) return EALREADY;
      return TakeLocked(*snapshot);
    }
    if (request == kIoctlSnapshotCollect) {
      blksnap_snapshot_collect karg;
      if (!memory.Read(arg, &karg, sizeof(karg))) return ENODATA;
      int ret = 0;
      uint32_t index = 0;
      if (!snapshots.empty()) {
        if (karg.ids == 0) {
          index = static_cast<uint32_t>(snapshots.size());
        } else {
          for (const auto& snapshot : snapshots) {
            if (index >= karg.count) {
              ret = ENODATA;
              break;
            }
            if (!memory.Write(karg.ids + uint64_t{index} * sizeof(blksnap_uuid), snapshot->id.b,
                              sizeof(blksnap_uuid))) {
              break;  // the kernel stops here and still returns 0
            }
            ++index;
          }
        }
      }
      karg.count = index;
      if (!memory.Write(arg, &karg, sizeof(karg))) return ENODATA;
      return ret;
    }
    if (request == kIoctlSnapshotWaitEvent) return WaitEventLocked(lock, memory, arg);
    if (flavour() == Flavour::kVal7) {
      if (request == kVal7IoctlMod) {
        blksnap_mod mod{};
        mod.compatibility_flags = 0x2;  // bit 1: setlog
        std::memcpy(mod.name, "standalone", sizeof("standalone"));
        return memory.Write(arg, &mod, sizeof(mod)) ? 0 : ENODATA;
      }
      if (request == kVal7IoctlSetlog) {
        blksnap_setlog setlog;
        return memory.Read(arg, &setlog, sizeof(setlog)) ? 0 : ENODATA;
      }
      if (request == kVal7IoctlAppendStorage) {
        blksnap_snapshot_append_storage append;
        if (!memory.Read(arg, &append, sizeof(append))) return ENODATA;
        if (!FindSnapshotLocked(append.id)) return ESRCH;
        return EOPNOTSUPP;  // appending sector ranges is not emulated
      }
    }
    return ENOTTY;
  }

  int CreateLocked(UserMemory& memory, uint64_t arg) {
    blksnap_snapshot_create karg;
    if (!memory.Read(arg, &karg, sizeof(karg))) return ENODATA;
    std::shared_ptr<DiffStorage> storage;
    const bool no_storage = flavour() == Flavour::kVal7 && karg.diff_storage_filename == 0;
    if (no_storage) {
      // VAL-7.0 with BLKSNAP_MODIFICATION: a snapshot without storage, which asks for some
      // with a low_free_space event (the answer, APPEND_STORAGE, is not emulated).
      storage = std::make_shared<DiffStorage>();
      storage->filled = reserved_sectors();
      storage->limit = karg.diff_storage_limit_sect;
    } else {
      std::string filename;
      if (int error = ReadUserString(memory, karg.diff_storage_filename, &filename);
          error != 0) {
        return error;
      }
      if (int error = SetDiffStorageLocked(filename, karg.diff_storage_limit_sect, &storage);
          error != 0) {
        return error;
      }
    }
    auto snapshot = std::make_shared<Snapshot>();
    snapshot->id = ToBlksnapUuid(NewRandomUuid());
    snapshot->storage = storage;
    snapshots.push_back(snapshot);
    if (no_storage) {
      blksnap_event_no_space data{};
      data.requested_nr_sect = std::min(kDiffStorageMinimum, karg.diff_storage_limit_sect);
      PushEventLocked(*storage, kEventLowFreeSpace, &data, sizeof(data));
    }
    karg.id = snapshot->id;
    return memory.Write(arg, &karg, sizeof(karg)) ? 0 : ENODATA;
  }

  int WaitEventLocked(std::unique_lock<std::mutex>& lock, UserMemory& memory, uint64_t arg) {
    blksnap_snapshot_event karg;
    std::memset(&karg, 0, sizeof(karg));
    // Only the id and the timeout are copied in.
    if (!memory.Read(arg, &karg, offsetof(blksnap_snapshot_event, code))) return EINVAL;
    std::shared_ptr<Snapshot> snapshot = FindSnapshotLocked(karg.id);
    if (!snapshot) return ESRCH;
    std::shared_ptr<DiffStorage> storage = snapshot->storage;
    snapshot.reset();
    const uint64_t wait_ms =
        std::min<uint64_t>(uint64_t{karg.timeout_ms} * kMillisecondsPerJiffy, kMaxWaitEventMs);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    ++active_waiters;
    while (storage->events.empty() && !shutting_down) {
      if (events_cv.wait_until(lock, deadline) == std::cv_status::timeout) break;
    }
    --active_waiters;
    waiters_cv.notify_all();
    if (storage->events.empty()) return ENOENT;
    Event event = std::move(storage->events.front());
    storage->events.pop_front();
    karg.code = event.code;
    karg.time_label = event.time;
    int ret = 0;
    size_t size = event.data.size();
    if (size > sizeof(karg.data)) {
      ret = ENOSPC;
      size = sizeof(karg.data);
    }
    std::memcpy(karg.data, event.data.data(), size);
    if (!memory.Write(arg, &karg, sizeof(karg))) return EINVAL;
    return ret;
  }

  // ---- fds ----

  int OpenLocked(uint64_t client, const std::string& path, int flags, int* fd) {
    Node node;
    if (int error = ResolveLocked(path, &node); error != 0) return error;
    OpenFile file;
    file.kind = node.kind;
    switch (node.kind) {
      case NodeKind::kControl:
      case NodeKind::kBdevFilter:
        break;
      case NodeKind::kDevice:
        if ((flags & O_EXCL) != 0 && node.device->claimed_by != nullptr) return EBUSY;
        file.device = node.device;
        break;
      case NodeKind::kImage:
        file.image_tracker = node.image_tracker;
        file.image_minor = node.image_tracker->image ? node.image_tracker->image->minor : 0;
        break;
      case NodeKind::kNone: {
        struct stat st;
        if (int error = RealStat(node.path, &st); error != 0) return error;
        break;
      }
    }
    Client& state = clients[client];
    const int new_fd = state.next_fd++;
    state.files[new_fd] = std::move(file);
    *fd = new_fd;
    return 0;
  }

  static IoctlKind CtlKind(uint32_t cmd) {
    switch (cmd) {
      case kCtlCbtInfo:
        return IoctlKind::kCbtInfo;
      case kCtlCbtMap:
        return IoctlKind::kCbtMap;
      case kCtlCbtDirty:
        return IoctlKind::kCbtDirty;
      case kCtlSnapshotAdd:
        return IoctlKind::kSnapshotAdd;
      case kCtlSnapshotInfo:
        return IoctlKind::kSnapshotInfo;
      default:
        return IoctlKind::kOther;
    }
  }

  // The same dispatch as IoctlLocked, without executing anything.
  IoctlKind ClassifyLocked(uint64_t client, UserMemory& memory, int fd, unsigned long request,
                           uint64_t arg) {
    auto client_it = clients.find(client);
    if (client_it == clients.end()) return IoctlKind::kOther;
    auto file_it = client_it->second.files.find(fd);
    if (file_it == client_it->second.files.end()) return IoctlKind::kOther;
    switch (file_it->second.kind) {
      case NodeKind::kControl:
        if (request == kIoctlVersion) return IoctlKind::kVersion;
        if (request == kIoctlSnapshotCreate) return IoctlKind::kSnapshotCreate;
        if (request == kIoctlSnapshotDestroy) return IoctlKind::kSnapshotDestroy;
        if (request == kIoctlSnapshotTake) return IoctlKind::kSnapshotTake;
        if (request == kIoctlSnapshotCollect) return IoctlKind::kSnapshotCollect;
        if (request == kIoctlSnapshotWaitEvent) return IoctlKind::kSnapshotWaitEvent;
        return IoctlKind::kOther;
      case NodeKind::kBdevFilter:
        if (request == kVal7BdevfilterAttach) return IoctlKind::kAttach;
        if (request == kVal7BdevfilterDetach) return IoctlKind::kDetach;
        if (request == kVal7BdevfilterCtl) {
          bdevfilter_ctl karg;
          if (!memory.Read(arg, &karg, sizeof(karg))) return IoctlKind::kOther;
          return CtlKind(karg.cmd);
        }
        return IoctlKind::kOther;
      case NodeKind::kDevice:
      case NodeKind::kImage: {
        if (request == kBlkGetSize64) return IoctlKind::kGetSize;
        unsigned long attach = 0, detach = 0, ctl = 0;
        switch (flavour()) {
          case Flavour::kLk615:
            attach = kLk615BlkfilterAttach;
            detach = kLk615BlkfilterDetach;
            ctl = kLk615BlkfilterCtl;
            break;
          case Flavour::kV7:
            attach = kV7BlkfilterAttach;
            detach = kV7BlkfilterDetach;
            ctl = kV7BlkfilterCtl;
            break;
          case Flavour::kVal7:
            return IoctlKind::kOther;
        }
        if (request == attach) return IoctlKind::kAttach;
        if (request == detach) return IoctlKind::kDetach;
        if (request == ctl) {
          blkfilter_ctl karg;
          if (!memory.Read(arg, &karg, sizeof(karg))) return IoctlKind::kOther;
          return CtlKind(karg.cmd);
        }
        return IoctlKind::kOther;
      }
      case NodeKind::kNone:
        return IoctlKind::kOther;
    }
    return IoctlKind::kOther;
  }

  int IoctlLocked(std::unique_lock<std::mutex>& lock, uint64_t client, UserMemory& memory,
                  int fd, unsigned long request, uint64_t arg) {
    auto client_it = clients.find(client);
    if (client_it == clients.end()) return EBADF;
    auto file_it = client_it->second.files.find(fd);
    if (file_it == client_it->second.files.end()) return EBADF;
    const OpenFile file = file_it->second;  // WAIT_EVENT unlocks; the fd may be closed meanwhile
    switch (file.kind) {
      case NodeKind::kControl:
        return ControlIoctlLocked(lock, memory, request, arg);
      case NodeKind::kBdevFilter:
        return BdevFilterIoctlLocked(memory, request, arg);
      case NodeKind::kDevice:
        return DeviceIoctlLocked(memory, file.device, request, arg);
      case NodeKind::kImage:
        return ImageIoctlLocked(memory, file, request, arg);
      case NodeKind::kNone:
        return ENOTTY;
    }
    return ENOTTY;
  }
};

EmulatedKernel::EmulatedKernel(EmulatorOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

EmulatedKernel::~EmulatedKernel() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->shutting_down = true;
  impl_->events_cv.notify_all();
  impl_->waiters_cv.wait(lock, [this] { return impl_->active_waiters == 0; });
}

absl::Status EmulatedKernel::AddDevice(const std::string& path, uint64_t size_bytes,
                                       uint32_t major, uint32_t minor) {
  if (path.empty()) return absl::InvalidArgumentError("empty device path");
  if (size_bytes == 0 || size_bytes % kSectorBytes != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("device size ", size_bytes, " is not a positive multiple of 512"));
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  const std::string normalized = NormalizePath(path);
  if (impl_->IsEmulatedName(normalized)) {
    return absl::AlreadyExistsError(absl::StrCat(normalized, " already exists"));
  }
  for (const auto& [existing_path, device] : impl_->devices) {
    if (device->major == major && device->minor == minor) {
      return absl::AlreadyExistsError(
          absl::StrCat("device number ", major, ":", minor, " is used by ", existing_path));
    }
  }
  if (major == kImageMajor) {
    for (const auto& [image_path, tracker] : impl_->images) {
      if (tracker->image && tracker->image->minor == minor) {
        return absl::AlreadyExistsError(
            absl::StrCat("device number ", major, ":", minor, " is used by ", image_path));
      }
    }
  }
  int fd = ::open(impl_->backing_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::string name = impl_->backing_dir + "/blksnap-emulator-device-XXXXXX";
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0) {
      return absl::InternalError(absl::StrCat("cannot create a backing file in ",
                                              impl_->backing_dir, ": ", std::strerror(errno)));
    }
    ::unlink(name.c_str());
  }
  if (::ftruncate(fd, static_cast<off_t>(size_bytes)) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot size the backing file of ", normalized, ": ",
                                            std::strerror(error)));
  }
  auto device = std::make_shared<Device>();
  device->path = normalized;
  device->size = size_bytes;
  device->major = major;
  device->minor = minor;
  device->fd = fd;
  impl_->devices[normalized] = std::move(device);
  return absl::OkStatus();
}

absl::Status EmulatedKernel::AddSymlink(const std::string& link, const std::string& target) {
  if (link.empty() || target.empty()) return absl::InvalidArgumentError("empty symlink");
  std::lock_guard<std::mutex> lock(impl_->mu);
  const std::string normalized = NormalizePath(link);
  if (impl_->IsEmulatedName(normalized)) {
    return absl::AlreadyExistsError(absl::StrCat(normalized, " already exists"));
  }
  impl_->symlinks[normalized] = target;
  return absl::OkStatus();
}

absl::Status EmulatedKernel::AddMount(const std::string& directory,
                                      const std::string& device_path) {
  char real[PATH_MAX];
  if (::realpath(directory.c_str(), real) == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("mount directory ", directory, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(directory, " is not a directory"));
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  Node node;
  if (impl_->ResolveLocked(device_path, &node) != 0 || node.kind != NodeKind::kDevice) {
    return absl::NotFoundError(absl::StrCat(device_path, " is not an emulated device"));
  }
  impl_->mounts.push_back(Impl::Mount{real, node.device->major, node.device->minor});
  return absl::OkStatus();
}

absl::Status EmulatedKernel::RemoveDevice(const std::string& path) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Node node;
  if (impl_->ResolveLocked(path, &node) != 0 || node.kind != NodeKind::kDevice) {
    return absl::NotFoundError(absl::StrCat(path, " is not an emulated device"));
  }
  node.device->dead = true;
  // blk_report_disk_dead() -> blkfilter_detach(): the tracker (and its CBT) goes away unless a
  // snapshot still holds it.
  Impl::DetachLocked(*node.device);
  impl_->devices.erase(node.path);
  return absl::OkStatus();
}

absl::Status EmulatedKernel::ResizeDevice(const std::string& path, uint64_t size_bytes) {
  if (size_bytes == 0 || size_bytes % kSectorBytes != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("device size ", size_bytes, " is not a positive multiple of 512"));
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  Node node;
  if (impl_->ResolveLocked(path, &node) != 0 || node.kind != NodeKind::kDevice) {
    return absl::NotFoundError(absl::StrCat(path, " is not an emulated device"));
  }
  if (::ftruncate(node.device->fd, static_cast<off_t>(size_bytes)) != 0) {
    return absl::InternalError(absl::StrCat("resize failed: ", std::strerror(errno)));
  }
  node.device->size = size_bytes;
  return absl::OkStatus();
}

absl::Status EmulatedKernel::WriteDevice(const std::string& path, uint64_t offset,
                                         const std::string& data) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Node node;
  if (int error = impl_->ResolveLocked(path, &node); error != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(error)));
  }
  if (node.kind == NodeKind::kDevice) {
    const uint64_t size = node.device->size;
    if (offset > size || data.size() > size - offset) {
      return absl::OutOfRangeError(absl::StrCat("write of ", data.size(), " bytes at ", offset,
                                                " beyond ", path, " (", size, " bytes)"));
    }
    if (impl_->WriteOriginLocked(node.device, offset, data.data(), data.size()) != 0) {
      return absl::InternalError(absl::StrCat("writing ", path, " failed"));
    }
    return absl::OkStatus();
  }
  if (node.kind == NodeKind::kImage) {
    return impl_->WriteImageLocked(*node.image_tracker, offset, data);
  }
  return absl::NotFoundError(absl::StrCat(path, " is not an emulated device or image"));
}

absl::StatusOr<std::string> EmulatedKernel::ReadDevice(const std::string& path, uint64_t offset,
                                                       uint64_t length) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Node node;
  if (int error = impl_->ResolveLocked(path, &node); error != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(error)));
  }
  if (node.kind == NodeKind::kDevice) {
    const uint64_t size = node.device->size;
    if (offset > size || length > size - offset) {
      return absl::OutOfRangeError(absl::StrCat("read of ", length, " bytes at ", offset,
                                                " beyond ", path, " (", size, " bytes)"));
    }
    std::string out(length, '\0');
    if (!ReadAll(node.device->fd, offset, out.data(), out.size())) {
      return absl::InternalError(absl::StrCat("reading ", path, " failed"));
    }
    return out;
  }
  if (node.kind == NodeKind::kImage) {
    return impl_->ReadImageLocked(*node.image_tracker, offset, length);
  }
  return absl::NotFoundError(absl::StrCat(path, " is not an emulated device or image"));
}

int EmulatedKernel::Open(const std::string& path, int flags, int* fd) {
  return OpenFor(kLocalClient, path, flags, fd);
}

int EmulatedKernel::Close(int fd) { return CloseFor(kLocalClient, fd); }

int EmulatedKernel::Ioctl(int fd, unsigned long request, void* arg) {
  return IoctlFor(kLocalClient, impl_->local_memory, fd, request,
                  static_cast<uint64_t>(reinterpret_cast<uintptr_t>(arg)));
}

int EmulatedKernel::Stat(const std::string& path, FileStatus* status) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->StatLocked(path, status);
}

int EmulatedKernel::RealPath(const std::string& path, std::string* resolved) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Node node;
  if (int error = impl_->ResolveLocked(path, &node); error != 0) return error;
  if (node.kind != NodeKind::kNone) {
    *resolved = node.path;
    return 0;
  }
  char buffer[PATH_MAX];
  if (::realpath(node.path.c_str(), buffer) == nullptr) return errno;
  struct stat st;
  if (int error = RealStat(buffer, &st); error != 0) return error;
  *resolved = buffer;
  return 0;
}

int EmulatedKernel::KernelRelease(std::string* release) {
  *release = impl_->options.kernel_release;
  return 0;
}

int EmulatedKernel::OpenFor(uint64_t client, const std::string& path, int flags, int* fd) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->OpenLocked(client, path, flags, fd);
}

int EmulatedKernel::CloseFor(uint64_t client, int fd) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->clients.find(client);
  if (it == impl_->clients.end() || it->second.files.erase(fd) == 0) return EBADF;
  return 0;
}

int EmulatedKernel::IoctlFor(uint64_t client, UserMemory& memory, int fd, unsigned long request,
                             uint64_t arg) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  return impl_->IoctlLocked(lock, client, memory, fd, request, arg);
}

void EmulatedKernel::DropClient(uint64_t client) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->clients.erase(client);
}

IoctlKind EmulatedKernel::ClassifyIoctl(uint64_t client, UserMemory& memory, int fd,
                                        unsigned long request, uint64_t arg) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->ClassifyLocked(client, memory, fd, request, arg);
}

std::vector<EmulatedSnapshotView> EmulatedKernel::ListSnapshots() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<EmulatedSnapshotView> views;
  for (const auto& snapshot : impl_->snapshots) {
    EmulatedSnapshotView view;
    view.id = snapshot->id;
    view.taken = snapshot->taken;
    for (const auto& tracker : snapshot->trackers) {
      view.devices.emplace_back(tracker->major, tracker->minor);
      if (tracker->diff_area && tracker->diff_area->corrupted) view.corrupted = true;
    }
    views.push_back(std::move(view));
  }
  return views;
}

}  // namespace cbt::blksnap::emulator
