#include "server/path_guard.h"

#include <fnmatch.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "backend/errno_status.h"

namespace cbt::agent {
namespace {

using blksnap::FileStatus;

// "/dev/x" or "/dev/x (/dev/y)" when a symlink was followed.
std::string Named(const std::string& path, const std::string& resolved) {
  return resolved == path ? path : absl::StrCat(path, " (resolves to ", resolved, ")");
}

const char* KindOf(const FileStatus& status) {
  if (status.is_block_device) return "a block device";
  if (status.is_directory) return "a directory";
  if (status.is_regular_file) return "a regular file";
  // The seam does not tell character devices from sockets and fifos.
  return "a character device or other special file";
}

}  // namespace

bool HasDotDotComponent(const std::string& path) {
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") return true;
  }
  return false;
}

bool IsUnderDirectory(const std::string& path, const std::string& dir) {
  if (dir == "/") return !path.empty() && path[0] == '/';
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         path[dir.size()] == '/');
}

PathGuard::PathGuard(blksnap::Kernel* fs, std::vector<std::string> device_globs,
                     std::vector<std::string> diff_storage_dirs)
    : fs_(fs),
      device_globs_(std::move(device_globs)),
      diff_storage_dirs_(std::move(diff_storage_dirs)) {}

absl::StatusOr<std::unique_ptr<PathGuard>> PathGuard::Create(blksnap::Kernel* fs,
                                                             PathGuardOptions options) {
  for (const std::string& glob : options.device_globs) {
    if (glob.empty() || glob[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("--device_allow='", glob, "' must be an absolute pattern like /dev/*"));
    }
  }
  std::vector<std::string> dirs;
  for (const std::string& dir : options.diff_storage_dirs) {
    const std::string flag = absl::StrCat("--diff_storage_allow=", dir);
    if (dir.empty() || dir[0] != '/' || HasDotDotComponent(dir)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": must be an absolute path without '..'"));
    }
    std::string resolved;
    if (int err = fs->RealPath(dir, &resolved); err != 0) {
      return ErrnoStatus(err, flag, absl::StatusCode::kInvalidArgument);
    }
    FileStatus status;
    if (int err = fs->Stat(resolved, &status); err != 0) {
      return ErrnoStatus(err, flag, absl::StatusCode::kInvalidArgument);
    }
    if (!status.is_directory && !status.is_block_device) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": ", KindOf(status), "; give a directory or a block device"));
    }
    dirs.push_back(std::move(resolved));
  }
  return std::unique_ptr<PathGuard>(
      new PathGuard(fs, std::move(options.device_globs), std::move(dirs)));
}

bool PathGuard::MatchesDeviceGlob(const std::string& resolved) const {
  for (const std::string& glob : device_globs_) {
    if (::fnmatch(glob.c_str(), resolved.c_str(), FNM_PATHNAME) == 0) return true;
  }
  return false;
}

bool PathGuard::UnderDiffStorageDir(const std::string& resolved) const {
  for (const std::string& dir : diff_storage_dirs_) {
    if (IsUnderDirectory(resolved, dir)) return true;
  }
  return false;
}

absl::StatusOr<GuardedDevice> PathGuard::CheckDevice(const std::string& device) const {
  if (HasDotDotComponent(device)) {
    return absl::PermissionDeniedError(
        absl::StrCat("device ", device, ": '..' components are not allowed in device paths"));
  }
  GuardedDevice out;
  out.path = device;
  if (int err = fs_->RealPath(device, &out.resolved); err != 0) {
    return ErrnoStatus(err, absl::StrCat("device ", device));
  }
  FileStatus status;
  if (int err = fs_->Stat(out.resolved, &status); err != 0) {
    return ErrnoStatus(err, absl::StrCat("device ", device));
  }
  if (status.is_directory) {
    return absl::InvalidArgumentError(
        absl::StrCat(Named(device, out.resolved), " is a directory, not a block device"));
  }
  if (!MatchesDeviceGlob(out.resolved)) {
    return absl::PermissionDeniedError(absl::StrCat("device ", Named(device, out.resolved),
                                                    " is outside the device allowlist (",
                                                    absl::StrJoin(device_globs_, " "), ")"));
  }
  if (!status.is_block_device) {
    return absl::PermissionDeniedError(absl::StrCat("device ", Named(device, out.resolved), " is ",
                                                    KindOf(status),
                                                    "; only block devices are allowed"));
  }
  out.major = status.rdev_major;
  out.minor = status.rdev_minor;
  return out;
}

absl::Status PathGuard::CheckDiffStorage(const std::string& path,
                                         const std::vector<GuardedDevice>& snapshot_devices) const {
  if (HasDotDotComponent(path)) {
    return absl::PermissionDeniedError(
        absl::StrCat("diff storage ", path, ": '..' components are not allowed"));
  }
  std::string resolved;
  if (int err = fs_->RealPath(path, &resolved); err != 0) {
    return ErrnoStatus(err, absl::StrCat("diff storage ", path));
  }
  FileStatus status;
  if (int err = fs_->Stat(resolved, &status); err != 0) {
    return ErrnoStatus(err, absl::StrCat("diff storage ", path));
  }
  if (!UnderDiffStorageDir(resolved)) {
    return absl::PermissionDeniedError(absl::StrCat("diff storage ", Named(path, resolved),
                                                    " is outside the diff-storage allowlist (",
                                                    absl::StrJoin(diff_storage_dirs_, " "), ")"));
  }
  if (status.is_block_device && !MatchesDeviceGlob(resolved)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "diff storage ", Named(path, resolved), " is a block device outside the device allowlist (",
        absl::StrJoin(device_globs_, " "), ")"));
  }
  if (!status.is_block_device && !status.is_directory && !status.is_regular_file) {
    return absl::PermissionDeniedError(
        absl::StrCat("diff storage ", Named(path, resolved), " is ", KindOf(status),
                     "; give a directory, a regular file or a block device"));
  }
  const uint32_t major = status.is_block_device ? status.rdev_major : status.dev_major;
  const uint32_t minor = status.is_block_device ? status.rdev_minor : status.dev_minor;
  for (const GuardedDevice& device : snapshot_devices) {
    if (device.major == major && device.minor == minor) {
      return absl::FailedPreconditionError(absl::StrCat(
          "diff storage ", Named(path, resolved), status.is_block_device ? " is " : " lives on ",
          "device ", device.path, " (", major, ":", minor,
          "), which is part of this snapshot. Put the diff storage on another device"));
    }
  }
  return absl::OkStatus();
}

}  // namespace cbt::agent
