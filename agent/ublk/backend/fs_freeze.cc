#include "ublk/backend/fs_freeze.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <condition_variable>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "backend/errno_status.h"
#include "backend/log.h"

namespace cbt::ublk {

dev_t WholeDiskOf(dev_t dev) {
  const std::string sys = absl::StrCat("/sys/dev/block/", major(dev), ":", minor(dev));
  char resolved[PATH_MAX];
  if (realpath(sys.c_str(), resolved) == nullptr) return dev;
  if (access(absl::StrCat(resolved, "/partition").c_str(), F_OK) != 0) return dev;
  std::ifstream parent(absl::StrCat(resolved, "/../dev"));
  unsigned maj = 0, min = 0;
  char colon = 0;
  if (!(parent >> maj >> colon >> min) || colon != ':') return dev;
  return makedev(maj, min);
}

namespace {

// Mount points in mountinfo escape space, tab, newline and backslash as \ooo.
std::string UnescapeMountPoint(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      const std::string octal = field.substr(i + 1, 3);
      char* end = nullptr;
      const long value = strtol(octal.c_str(), &end, 8);
      if (end == octal.c_str() + 3) {
        out.push_back(static_cast<char>(value));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> MountPointsOf(dev_t disk) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return agent::ErrnoStatus(errno, "open /proc/self/mountinfo");
  std::vector<std::string> points;
  std::string line;
  while (std::getline(in, line)) {
    // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() < 5) continue;
    unsigned maj = 0, min = 0;
    if (sscanf(fields[2].c_str(), "%u:%u", &maj, &min) != 2) continue;
    const dev_t dev = makedev(maj, min);
    if (dev == disk || WholeDiskOf(dev) == disk) points.push_back(UnescapeMountPoint(fields[4]));
  }
  return points;
}

absl::StatusOr<std::unique_ptr<FrozenFilesystems>> FrozenFilesystems::Freeze(
    dev_t disk, absl::Duration timeout) {
  absl::StatusOr<std::vector<std::string>> points = MountPointsOf(disk);
  if (!points.ok()) return points.status();
  std::unique_ptr<FrozenFilesystems> frozen(new FrozenFilesystems());
  for (const std::string& point : *points) {
    const int fd = open(point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return agent::ErrnoStatus(errno, absl::StrCat("open mount point ", point));
    // FIFREEZE can block for as long as writeback takes; run it on its own thread so that the
    // take is bounded. When we give up, the thread owns the fd and undoes a late freeze.
    struct Call {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      bool abandoned = false;
      int rc = 0;
    };
    auto call = std::make_shared<Call>();
    std::thread([fd, call, point] {
      const int rc = ioctl(fd, FIFREEZE, 0) == 0 ? 0 : errno;
      std::unique_lock<std::mutex> lock(call->mu);
      call->done = true;
      call->rc = rc;
      if (!call->abandoned) {
        call->cv.notify_all();
        return;
      }
      lock.unlock();
      if (rc == 0) ioctl(fd, FITHAW, 0);
      close(fd);
      agent::LogWarning("ublk", "late freeze of %s undone", point.c_str());
    }).detach();
    int rc;
    {
      std::unique_lock<std::mutex> lock(call->mu);
      const auto wait = std::chrono::nanoseconds(absl::ToInt64Nanoseconds(timeout));
      if (!call->cv.wait_for(lock, wait, [&] { return call->done; })) {
        call->abandoned = true;
        return absl::DeadlineExceededError(absl::StrCat("freezing the file system on ", point,
                                                        " took longer than ",
                                                        absl::FormatDuration(timeout)));
      }
      rc = call->rc;
    }
    if (rc == EOPNOTSUPP || rc == ENOTTY) {
      agent::LogWarning("ublk", "file system on %s cannot be frozen; snapshot is crash-consistent",
                        point.c_str());
      close(fd);
      continue;
    }
    if (rc != 0) {
      close(fd);
      return agent::ErrnoStatus(rc, absl::StrCat("freeze the file system on ", point));
    }
    frozen->frozen_.push_back(point);
    frozen->fds_.push_back(fd);
  }
  return frozen;
}

void FrozenFilesystems::Thaw() {
  for (size_t i = 0; i < fds_.size(); ++i) {
    if (ioctl(fds_[i], FITHAW, 0) != 0) {
      agent::LogWarning("ublk", "thaw %s: %s", frozen_[i].c_str(),
                        agent::ErrnoText(errno).c_str());
    }
    close(fds_[i]);
  }
  fds_.clear();
  frozen_.clear();
}

}  // namespace cbt::ublk
