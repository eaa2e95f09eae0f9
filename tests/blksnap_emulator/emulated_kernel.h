// EmulatedKernel: the user-space interface of the blksnap kernel module, emulated byte for byte.
//
// The blksnap module cannot be built or loaded on the build hosts, so the blksnap backend is
// tested against this emulator of what user space sees: device nodes, open(2), stat(2),
// realpath(3), uname(2) and — above all — every ioctl of the three flavours in
// agent/blksnap/uapi.h (lk6.15, v7, VAL-7.0), decoded from the request number and the user
// memory at `arg` exactly as the real module does (struct sizes from uapi.h, embedded user
// pointers followed, the real module's errno for every failure, see
// ../shared/reference/blksnap-real-module.md and blksnap.md §1, §3).
//
// Behind the interface:
//  - emulated block devices whose contents live in (unnamed) files under `backing_dir`;
//  - per attached device a tracker with a cbt::CbtMap (Set on origin writes, SetBoth on image
//    writes and CBTDIRTY, Reset + Switch at take);
//  - snapshots with real diff storage (an O_TMPFILE in a directory, a regular file, or an
//    emulated block device), real copy-on-write of chunks at the first origin write after take,
//    readable/writable snapshot images, overflow handling and the event queue.
// Paths that are not emulated nodes or symlinks fall through to the real file system for Stat
// and RealPath, so diff storage lives in real temp directories; AddMount makes real files look
// as if they lived on an emulated device. Host device nodes (block and character) never show
// through: they answer ENOENT.
//
// Thread-safe: one mutex; WAIT_EVENT sleeps without holding it.
#ifndef CBT_TESTS_BLKSNAP_EMULATOR_EMULATED_KERNEL_H_
#define CBT_TESTS_BLKSNAP_EMULATOR_EMULATED_KERNEL_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blksnap/kernel.h"
#include "blksnap/uapi.h"
#include "core/tracking_geometry.h"
#include "tests/blksnap_emulator/ioctl_kind.h"

namespace cbt::blksnap::emulator {

struct EmulatorOptions {
  Flavour flavour = Flavour::kLk615;          // from uapi.h
  std::string kernel_release = "6.15.0-emu";  // what KernelRelease() answers
  std::string backing_dir;                    // where device contents live (files); "" = $TMPDIR or /tmp
  uint64_t chunk_size = 256 * 1024;           // COW chunk (multiple of 512)
  uint64_t diff_storage_reserved_bytes = 2 * 1024 * 1024;  // first 4096 sectors unusable
  cbt::TrackingParams tracking;
};

// WAIT_EVENT's timeout is really in jiffies (blksnap-real-module.md §4); at Debian's HZ=250 one
// unit is 4 ms. The emulator honours that but never sleeps longer than kMaxWaitEventMs per call
// so tests stay fast.
inline constexpr uint32_t kMillisecondsPerJiffy = 4;
inline constexpr uint32_t kMaxWaitEventMs = 250;

// Reads/writes the memory of the process that made a syscall (copy_from_user / copy_to_user).
// All-or-nothing: a partial transfer is a failure. Zero-length transfers always succeed.
class UserMemory {
 public:
  virtual ~UserMemory() = default;
  virtual bool Read(uint64_t address, void* out, size_t length) = 0;
  virtual bool Write(uint64_t address, const void* data, size_t length) = 0;
  // strncpy_from_user: the NUL-terminated string at `address`, at most `max_length` bytes.
  // 0, EFAULT (unreadable) or EINVAL (not terminated within max_length).
  virtual int ReadString(uint64_t address, size_t max_length, std::string* out);
};

// This process: plain memcpy. Address 0 (NULL) fails, like an unmapped page.
class LocalMemory final : public UserMemory {
 public:
  bool Read(uint64_t address, void* out, size_t length) override;
  bool Write(uint64_t address, const void* data, size_t length) override;
  // Stops at the NUL: reading past the caller's string would read past its allocation.
  int ReadString(uint64_t address, size_t max_length, std::string* out) override;
};

// Another process, through process_vm_readv / process_vm_writev.
class ProcessMemory final : public UserMemory {
 public:
  explicit ProcessMemory(pid_t pid);
  bool Read(uint64_t address, void* out, size_t length) override;
  bool Write(uint64_t address, const void* data, size_t length) override;

 private:
  const pid_t pid_;
};

// "create", "destroy", "take", "collect", "wait_event", "attach", "detach", "cbt_info",
// "cbt_map", "cbt_dirty", "snapshot_add", "snapshot_info", "version", "get_size", "other".
const char* IoctlKindName(IoctlKind kind);
absl::StatusOr<IoctlKind> ParseIoctlKind(const std::string& name);

// The emulated kernel's own view of a snapshot (for tests; no uapi exposes this).
struct EmulatedSnapshotView {
  blksnap_uuid id{};
  bool taken = false;
  bool corrupted = false;  // a member's diff area is corrupted
  // Members as major:minor (a removed device stays a member until the snapshot is destroyed).
  std::vector<std::pair<uint32_t, uint32_t>> devices;
};

class EmulatedKernel final : public Kernel {
 public:
  explicit EmulatedKernel(EmulatorOptions options);
  ~EmulatedKernel() override;

  EmulatedKernel(const EmulatedKernel&) = delete;
  EmulatedKernel& operator=(const EmulatedKernel&) = delete;

  // ---- Test control: emulated block devices backed by files in backing_dir ----

  // A zero-filled device of `size_bytes` (a positive multiple of 512) at `path` with device
  // number major:minor (both unique). AlreadyExists if the path or number is taken.
  absl::Status AddDevice(const std::string& path, uint64_t size_bytes, uint32_t major,
                         uint32_t minor);
  // RealPath/Stat/Open follow it (a relative target is relative to the link's directory).
  absl::Status AddSymlink(const std::string& link, const std::string& target);
  // Real files under the real directory `directory` Stat as living on the emulated device
  // `device_path` (dev_major/dev_minor) — e.g. diff storage on a snapshotted device.
  absl::Status AddMount(const std::string& directory, const std::string& device_path);
  // Hot removal: the node disappears, the filter is detached automatically (CBT lost), images
  // of the device fail I/O until their snapshot is destroyed.
  absl::Status RemoveDevice(const std::string& path);
  absl::Status ResizeDevice(const std::string& path, uint64_t size_bytes);
  // Origin device: CBT Set + copy-on-write, then the data lands. Snapshot image: the chunk is
  // copied into the diff storage first, then the stored copy is modified (+ CBT SetBoth).
  absl::Status WriteDevice(const std::string& path, uint64_t offset, const std::string& data);
  // Origin or image. Image reads fail with DataLoss ("EIO") once the snapshot overflowed or the
  // origin was removed.
  absl::StatusOr<std::string> ReadDevice(const std::string& path, uint64_t offset,
                                         uint64_t length);

  // ---- Kernel seam (in-process: `arg` is a pointer in this process) ----
  int Open(const std::string& path, int flags, int* fd) override;
  int Close(int fd) override;
  int Ioctl(int fd, unsigned long request, void* arg) override;
  int Stat(const std::string& path, FileStatus* status) override;
  int RealPath(const std::string& path, std::string* resolved) override;
  int KernelRelease(std::string* release) override;

  // ---- Same operations on behalf of another process (remote server) ----
  // File descriptors are per `client`; the in-process seam is client 0.
  int OpenFor(uint64_t client, const std::string& path, int flags, int* fd);
  int CloseFor(uint64_t client, int fd);
  int IoctlFor(uint64_t client, UserMemory& memory, int fd, unsigned long request, uint64_t arg);
  // The client went away: close its fds (kernel objects stay).
  void DropClient(uint64_t client);
  // Which operation IoctlFor with these arguments would perform; executes nothing. Reads the
  // caller's struct only for the filter control calls (to find `cmd`).
  IoctlKind ClassifyIoctl(uint64_t client, UserMemory& memory, int fd, unsigned long request,
                          uint64_t arg);

  // ---- Test inspection ----
  // Every snapshot the module holds, in COLLECT order.
  std::vector<EmulatedSnapshotView> ListSnapshots();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "lk6.15" | "v7" | "val7".
absl::StatusOr<Flavour> ParseFlavour(const std::string& text);
const char* FlavourName(Flavour flavour);

}  // namespace cbt::blksnap::emulator

#endif  // CBT_TESTS_BLKSNAP_EMULATOR_EMULATED_KERNEL_H_
