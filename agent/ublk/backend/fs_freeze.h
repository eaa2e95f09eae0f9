// Freezing the file systems mounted on a block device around a snapshot take, so that the
// snapshot holds a consistent file system and not one with half-written metadata.
//
// FIFREEZE flushes dirty data through the device (the proxy's queues must be running) and
// blocks new writes until FITHAW. A file system that cannot be frozen (EOPNOTSUPP) is skipped
// with a warning: the snapshot is then crash-consistent, as without a mount.
#ifndef CBT_AGENT_UBLK_BACKEND_FS_FREEZE_H_
#define CBT_AGENT_UBLK_BACKEND_FS_FREEZE_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cbt::ublk {

// The whole disk a block device number belongs to: itself, or the disk of a partition (sysfs).
dev_t WholeDiskOf(dev_t dev);

// Mount points (from /proc/self/mountinfo) whose source is the block device `disk` or one of
// its partitions.
absl::StatusOr<std::vector<std::string>> MountPointsOf(dev_t disk);

// Thaws what it froze when destroyed (or at Thaw()).
class FrozenFilesystems {
 public:
  // Freezes every file system mounted on `disk` (see MountPointsOf), each FIFREEZE bounded by
  // `timeout`: DeadlineExceeded when one does not return in time (it is thawed as soon as it
  // does, and everything frozen before is thawed at once).
  static absl::StatusOr<std::unique_ptr<FrozenFilesystems>> Freeze(dev_t disk,
                                                                   absl::Duration timeout);
  ~FrozenFilesystems() { Thaw(); }
  FrozenFilesystems(const FrozenFilesystems&) = delete;
  FrozenFilesystems& operator=(const FrozenFilesystems&) = delete;

  void Thaw();
  const std::vector<std::string>& frozen() const { return frozen_; }

 private:
  FrozenFilesystems() = default;
  std::vector<std::string> frozen_;
  std::vector<int> fds_;
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_BACKEND_FS_FREEZE_H_
