// Which paths a request may name: the device allowlist (--device_allow) and the diff-storage
// allowlist (--diff_storage_allow), checked before a request reaches the backend.
//
// Paths are resolved through the same seam the backend uses (blksnap::Kernel: the host, or the
// uapi emulator in tests), following every symlink, and only the resolved path is judged, so a
// symlink or a ".." cannot lead out of what is allowed. Codes:
//
//   devices (every RPC that names one)
//     ".." component                              PERMISSION_DENIED
//     does not exist                               NOT_FOUND (as the backend would answer)
//     resolves to a directory                      INVALID_ARGUMENT (never a device; the
//                                                  bad-input table's code)
//     resolves outside every --device_allow glob   PERMISSION_DENIED
//     not a block device (character device such as /dev/mem or /dev/null, regular file,
//     socket, fifo)                                PERMISSION_DENIED
//   diff storage (CreateSnapshot)
//     ".." component                              PERMISSION_DENIED
//     does not exist                               NOT_FOUND
//     resolves outside every --diff_storage_allow entry (component-wise: /srv/diff allows
//     /srv/diff and /srv/diff/x, not /srv/diff2)   PERMISSION_DENIED
//     a block device that no --device_allow glob matches, or anything that is not a
//     directory, regular file or block device      PERMISSION_DENIED
//     is, or lives on, a device of the snapshot    FAILED_PRECONDITION (as the backend says)
//
// Globs are fnmatch(3) patterns with FNM_PATHNAME ('*' does not match '/'): "/dev/*" allows
// /dev/sdb and /dev/dm-0 (where /dev/mapper/* and /dev/disk/by-id/* links point), not
// /dev/pts/0. Diff-storage entries are resolved once at startup and must exist then.
//
// What is left: the backend resolves the path again, so whoever can swap a symlink inside an
// allowed directory between the two resolutions wins the race. Allowed directories (and /dev)
// must therefore be writable by root only.
#ifndef CBT_AGENT_SERVER_PATH_GUARD_H_
#define CBT_AGENT_SERVER_PATH_GUARD_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "blksnap/kernel.h"

namespace cbt::agent {

struct PathGuardOptions {
  std::vector<std::string> device_globs;       // --device_allow
  std::vector<std::string> diff_storage_dirs;  // --diff_storage_allow
};

// A device path the guard let through, as it resolved.
struct GuardedDevice {
  std::string path;
  std::string resolved;
  uint32_t major = 0;
  uint32_t minor = 0;
};

class PathGuard {
 public:
  // `fs` must outlive the guard. InvalidArgument for a relative glob, or a diff-storage entry
  // that is relative, contains "..", does not resolve, or is neither a directory nor a block
  // device.
  static absl::StatusOr<std::unique_ptr<PathGuard>> Create(blksnap::Kernel* fs,
                                                           PathGuardOptions options);

  absl::StatusOr<GuardedDevice> CheckDevice(const std::string& device) const;
  // `snapshot_devices`: the snapshot's devices, as CheckDevice let them through.
  absl::Status CheckDiffStorage(const std::string& path,
                                const std::vector<GuardedDevice>& snapshot_devices) const;

  const std::vector<std::string>& device_globs() const { return device_globs_; }
  // Resolved.
  const std::vector<std::string>& diff_storage_dirs() const { return diff_storage_dirs_; }

 private:
  PathGuard(blksnap::Kernel* fs, std::vector<std::string> device_globs,
            std::vector<std::string> diff_storage_dirs);
  bool MatchesDeviceGlob(const std::string& resolved) const;
  bool UnderDiffStorageDir(const std::string& resolved) const;

  blksnap::Kernel* const fs_;
  const std::vector<std::string> device_globs_;
  const std::vector<std::string> diff_storage_dirs_;
};

// True when a '/'-separated component of `path` is "..".
bool HasDotDotComponent(const std::string& path);
// Component-wise: `path` is `dir` or lies below it. Both absolute and canonical.
bool IsUnderDirectory(const std::string& path, const std::string& dir);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_PATH_GUARD_H_
