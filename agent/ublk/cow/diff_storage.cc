#include "ublk/cow/diff_storage.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "backend/errno_status.h"
#include "ublk/cow/aligned_io.h"

namespace cbt::ublk {
namespace {

using ::cbt::agent::ErrnoStatus;

// open() with O_DIRECT first, then without it where the filesystem refuses direct I/O (tmpfs
// answers EINVAL), as blksnap falls back to buffered I/O. Returns the fd or -errno.
int OpenMaybeDirect(const char* path, int flags, mode_t mode, bool* direct) {
  int fd = ::open(path, flags | O_DIRECT | O_CLOEXEC, mode);
  if (fd >= 0) {
    *direct = true;
    return fd;
  }
  if (errno != EINVAL) return -errno;
  fd = ::open(path, flags | O_CLOEXEC, mode);
  if (fd < 0) return -errno;
  *direct = false;
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DiffStorage>> DiffStorage::Open(const DiffStorageOptions& options,
                                                              uint64_t chunk_size) {
  const std::string& path = options.path;
  const uint64_t limit = options.limit_bytes;
  if (path.empty()) return absl::InvalidArgumentError("diff storage path is empty");
  if (!IsPowerOfTwo(chunk_size) || chunk_size < kIoAlign) {
    return absl::InvalidArgumentError(absl::StrCat("chunk size ", chunk_size, " for diff storage ",
                                                   path, " is not a power of two >= ",
                                                   kIoAlign));
  }
  if (limit == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("diff storage limit for ", path, " is 0; it must be positive"));
  }
  if (limit % kIoAlign != 0) {
    return absl::InvalidArgumentError(absl::StrCat("diff storage limit ", limit, " for ", path,
                                                   " is not a multiple of ", kIoAlign));
  }
  if (limit < chunk_size) {
    return absl::InvalidArgumentError(absl::StrCat("diff storage limit ", limit, " for ", path,
                                                   " is smaller than one chunk (", chunk_size,
                                                   " bytes)"));
  }

  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("diff storage path ", path, " does not exist"));
    }
    return ErrnoStatus(err, absl::StrCat("stat diff storage path ", path));
  }

  bool direct = false;
  if (S_ISDIR(st.st_mode)) {
    const int fd = OpenMaybeDirect(path.c_str(), O_TMPFILE | O_RDWR, 0600, &direct);
    if (fd < 0) {
      const int err = -fd;
      if (err == EOPNOTSUPP || err == EISDIR) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the filesystem of diff storage directory ", path,
            " does not support unnamed temporary files (O_TMPFILE)"));
      }
      return ErrnoStatus(err, absl::StrCat("create a temporary file in diff storage directory ",
                                           path));
    }
    auto storage = std::unique_ptr<DiffStorage>(
        new DiffStorage(Kind::kTempFile, path, fd, direct, limit, chunk_size, 0));
    std::lock_guard<std::mutex> lock(storage->mu_);
    if (absl::Status s = storage->GrowLocked(chunk_size); !s.ok()) return s;
    return storage;
  }

  if (S_ISREG(st.st_mode)) {
    const int fd = OpenMaybeDirect(path.c_str(), O_RDWR, 0, &direct);
    if (fd < 0) return ErrnoStatus(-fd, absl::StrCat("open diff storage file ", path));
    struct stat fst {};
    if (::fstat(fd, &fst) != 0 || !S_ISREG(fst.st_mode)) {
      const int err = errno;
      ::close(fd);
      return absl::FailedPreconditionError(
          absl::StrCat("diff storage file ", path, " changed while being opened (errno ", err,
                       ")"));
    }
    // Blocks are reserved from offset 0 whatever the current size is (a sparse file's size
    // reserves nothing), so `allocated_` starts at 0 and the first growth covers [0, step).
    auto storage = std::unique_ptr<DiffStorage>(
        new DiffStorage(Kind::kRegularFile, path, fd, direct, limit, chunk_size, 0));
    std::lock_guard<std::mutex> lock(storage->mu_);
    if (absl::Status s = storage->GrowLocked(chunk_size); !s.ok()) return s;
    return storage;
  }

  if (S_ISBLK(st.st_mode)) {
    const int fd = OpenMaybeDirect(path.c_str(), O_RDWR | O_EXCL, 0, &direct);
    if (fd < 0) {
      const int err = -fd;
      if (err == EBUSY) {
        return absl::FailedPreconditionError(absl::StrCat(
            "diff storage block device ", path,
            " is in use (mounted, or opened exclusively by someone else)"));
      }
      return ErrnoStatus(err, absl::StrCat("open diff storage block device ", path));
    }
    uint64_t size = 0;
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, absl::StrCat("get the size of diff storage block device ", path));
    }
    if (size < chunk_size) {
      ::close(fd);
      return absl::FailedPreconditionError(
          absl::StrCat("diff storage block device ", path, " has ", size,
                       " bytes, less than one chunk (", chunk_size, " bytes)"));
    }
    const uint64_t effective = std::min(AlignDown(size, kIoAlign), limit);
    return std::unique_ptr<DiffStorage>(new DiffStorage(Kind::kBlockDevice, path, fd, direct,
                                                        effective, chunk_size, size));
  }

  return absl::InvalidArgumentError(absl::StrCat(
      "diff storage path ", path, " is neither a directory, a regular file nor a block device"));
}

DiffStorage::DiffStorage(Kind kind, std::string path, int fd, bool direct_io, uint64_t limit,
                         uint64_t chunk_size, uint64_t allocated)
    : kind_(kind),
      path_(std::move(path)),
      fd_(fd),
      direct_io_(direct_io),
      limit_(limit),
      chunk_size_(chunk_size),
      allocated_(allocated) {}

DiffStorage::~DiffStorage() { ::close(fd_); }

uint64_t DiffStorage::allocated_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocated_;
}

absl::Status DiffStorage::GrowLocked(uint64_t need) {
  if (need <= allocated_) return absl::OkStatus();
  if (kind_ == Kind::kBlockDevice) {
    return absl::ResourceExhaustedError(
        absl::StrCat("diff storage block device ", path_, " is full"));
  }
  const uint64_t max_bytes = capacity_chunks() * chunk_size_;
  uint64_t target = std::max(need, AlignUp(allocated_ + kGrowStep, chunk_size_));
  target = std::min(target, max_bytes);
  if (target < need) {
    return absl::ResourceExhaustedError(
        absl::StrCat("diff storage ", path_, " reached its limit of ", limit_, " bytes"));
  }
  const off_t start = static_cast<off_t>(allocated_);
  const off_t length = static_cast<off_t>(target - allocated_);
  int rc;
  do {
    rc = ::fallocate(fd_, 0, start, length);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (err == ENOSPC || err == EDQUOT) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot grow diff storage ", path_, " to ", target, " bytes: ",
          ::cbt::agent::ErrnoText(err)));
    }
    if (err != EOPNOTSUPP) {
      return ErrnoStatus(err, absl::StrCat("grow diff storage ", path_, " to ", target,
                                           " bytes"));
    }
    // No fallocate on this filesystem: extend the size (sparse), never shrinking the file.
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return ErrnoStatus(errno, "stat diff storage " + path_);
    if (static_cast<uint64_t>(st.st_size) < target &&
        ::ftruncate(fd_, static_cast<off_t>(target)) != 0) {
      return ErrnoStatus(errno, absl::StrCat("extend diff storage ", path_, " to ", target,
                                             " bytes"));
    }
  }
  allocated_ = target;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> DiffStorage::AllocateChunk() {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t offset = used_.load(std::memory_order_relaxed);
  if (offset / chunk_size_ >= capacity_chunks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "diff storage ", path_, " is full: its limit of ", limit_, " bytes is reached"));
  }
  if (absl::Status s = GrowLocked(offset + chunk_size_); !s.ok()) return s;
  used_.store(offset + chunk_size_, std::memory_order_relaxed);
  return offset;
}

std::string DiffStorage::describe() const {
  const char* io = direct_io_ ? " (direct I/O)" : " (buffered I/O)";
  switch (kind_) {
    case Kind::kTempFile:
      return absl::StrCat("unnamed temporary file in ", path_, io, ", limit ", limit_,
                          " bytes");
    case Kind::kRegularFile:
      return absl::StrCat("file ", path_, io, ", limit ", limit_, " bytes");
    case Kind::kBlockDevice:
      return absl::StrCat("block device ", path_, io, ", limit ", limit_, " bytes");
  }
  return path_;
}

}  // namespace cbt::ublk
