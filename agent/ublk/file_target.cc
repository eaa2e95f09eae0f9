#include "ublk/file_target.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "backend/errno_status.h"
#include "ublk/uapi.h"

namespace cbt::ublk {
namespace {

constexpr uint32_t kSubReadWrite = 1;
constexpr uint32_t kSubFlush = 2;
constexpr size_t kZeroBufferBytes = 1 << 20;

uint32_t Log2(uint64_t v) {
  uint32_t shift = 0;
  while ((uint64_t{1} << (shift + 1)) <= v) ++shift;
  return shift;
}

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

uint64_t ReadSysfsNumber(const std::string& path) {
  std::ifstream in(path);
  uint64_t value = 0;
  if (!(in >> value)) return 0;
  return value;
}

int Fallocate(int fd, int mode, uint64_t offset, uint64_t length) {
  if (fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) return 0;
  return -errno;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileTarget>> FileTarget::Open(const std::string& path,
                                                             const FileTargetOptions& options) {
  const int access = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  bool direct = options.direct_io;
  int fd = open(path.c_str(), access | (direct ? O_DIRECT : 0));
  if (fd < 0 && direct && errno == EINVAL) {  // the file system has no O_DIRECT
    direct = false;
    fd = open(path.c_str(), access);
  }
  if (fd < 0) return agent::ErrnoStatus(errno, absl::StrCat("open backing ", path));
  auto fail = [fd](absl::Status status) {
    close(fd);
    return status;
  };

  struct stat st;
  if (fstat(fd, &st) != 0) return fail(agent::ErrnoStatus(errno, absl::StrCat("stat ", path)));
  BackingInfo info;
  info.path = path;
  info.direct_io = direct;
  info.read_only = options.read_only;
  if (S_ISBLK(st.st_mode)) {
    info.block_device = true;
    uint64_t size = 0;
    int logical = 0;
    unsigned int physical = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0 || ioctl(fd, BLKSSZGET, &logical) != 0 ||
        ioctl(fd, BLKPBSZGET, &physical) != 0) {
      return fail(agent::ErrnoStatus(errno, absl::StrCat("block device geometry of ", path)));
    }
    info.size_bytes = size;
    info.logical_block_size = static_cast<uint32_t>(logical);
    info.physical_block_size = physical;
    const std::string queue = absl::StrCat("/sys/dev/block/", major(st.st_rdev), ":",
                                           minor(st.st_rdev), "/queue/");
    info.discard = !options.read_only && ReadSysfsNumber(queue + "discard_max_bytes") > 0;
    if (info.discard) {
      info.discard_granularity =
          static_cast<uint32_t>(ReadSysfsNumber(queue + "discard_granularity"));
    }
  } else if (S_ISREG(st.st_mode)) {
    info.size_bytes = static_cast<uint64_t>(st.st_size);
    info.logical_block_size = 512;
    struct statx stx;
    if (direct && statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align > 512) {
      info.logical_block_size = stx.stx_dio_offset_align;  // O_DIRECT needs that alignment
    }
    info.physical_block_size = info.logical_block_size > 4096 ? info.logical_block_size : 4096;
    if (!options.read_only) {
      // Can this file system punch holes? Probe past the end, where nothing can be lost.
      uint64_t past_end = RoundUp(info.size_bytes, 4096);
      info.discard = Fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, past_end, 4096) == 0;
      info.discard_granularity = static_cast<uint32_t>(st.st_blksize);
    }
  } else {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("backing ", path, " is neither a regular file nor a block device")));
  }
  if (!IsPowerOfTwo(info.logical_block_size) || info.logical_block_size < 512 ||
      info.logical_block_size > 4096 || !IsPowerOfTwo(info.physical_block_size) ||
      info.physical_block_size < info.logical_block_size) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("backing ", path, ": unusable block sizes ", info.logical_block_size, "/",
                     info.physical_block_size)));
  }
  if (info.discard_granularity < info.logical_block_size ||
      info.discard_granularity % info.logical_block_size != 0) {
    info.discard_granularity = info.logical_block_size;
  }
  if (info.size_bytes < info.logical_block_size) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("backing ", path, " is smaller than one block (", info.size_bytes,
                     " bytes)")));
  }
  return std::unique_ptr<FileTarget>(new FileTarget(fd, std::move(info), options.read_only));
}

FileTarget::FileTarget(int fd, BackingInfo backing, bool read_only)
    : fd_(fd),
      backing_(std::move(backing)),
      read_only_(read_only),
      queues_(new std::atomic<std::vector<Pending>*>[kMaxQueues]()) {}

FileTarget::~FileTarget() {
  preparer_.reset();  // its threads may still use the backing through the observer
  close(fd_);
  free(zeroes_);
}

void FileTarget::set_write_observer(WriteObserver* observer) {
  preparer_.reset();
  observer_ = observer;
  if (observer != nullptr) preparer_ = std::make_unique<WritePreparer>(observer, kMaxQueues);
}

void FileTarget::ConfigureDevice(UblkDeviceOptions* options) const {
  const uint64_t logical = backing_.logical_block_size;
  options->capacity_sectors = backing_.size_bytes / logical * logical >> 9;
  options->logical_block_shift = Log2(backing_.logical_block_size);
  options->physical_block_shift = Log2(backing_.physical_block_size);
  options->read_only = backing_.read_only;
  const uint32_t max_sync = kMaxSyncOpSectors;
  options->discard_granularity = backing_.discard_granularity;
  options->discard_alignment = 0;
  options->max_discard_sectors = backing_.discard ? max_sync : 0;
  options->max_write_zeroes_sectors = backing_.read_only ? 0 : max_sync;
}

FileTarget::Stats FileTarget::stats() const {
  Stats s;
  s.reads = counters_.reads.load(std::memory_order_relaxed);
  s.writes = counters_.writes.load(std::memory_order_relaxed);
  s.fua_writes = counters_.fua_writes.load(std::memory_order_relaxed);
  s.flushes = counters_.flushes.load(std::memory_order_relaxed);
  s.discards = counters_.discards.load(std::memory_order_relaxed);
  s.write_zeroes = counters_.write_zeroes.load(std::memory_order_relaxed);
  s.errors = counters_.errors.load(std::memory_order_relaxed);
  s.bytes_read = counters_.bytes_read.load(std::memory_order_relaxed);
  s.bytes_written = counters_.bytes_written.load(std::memory_order_relaxed);
  s.deferred_writes = preparer_ ? preparer_->deferred_count() : 0;
  return s;
}

std::vector<FileTarget::Pending>& FileTarget::PendingFor(IoContext& ctx) {
  std::atomic<std::vector<Pending>*>& slot = queues_[ctx.queue_id()];
  std::vector<Pending>* pending = slot.load(std::memory_order_acquire);
  if (pending == nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    pending = slot.load(std::memory_order_relaxed);
    if (pending == nullptr) {
      owned_.push_back(std::make_unique<std::vector<Pending>>(ctx.queue_depth()));
      pending = owned_.back().get();
      slot.store(pending, std::memory_order_release);
    }
  }
  return *pending;
}

void FileTarget::Finish(IoContext& ctx, int tag, int result) {
  if (result < 0) counters_.errors.fetch_add(1, std::memory_order_relaxed);
  ctx.Complete(tag, result);
}

void FileTarget::Submit(IoContext& ctx, const IoRequest& request) {
  const int tag = request.tag;
  const uint64_t offset = request.start_sector << 9;
  const uint64_t length = uint64_t{request.nr_sectors} << 9;
  const bool data_op = request.op == kIoOpRead || request.op == kIoOpWrite ||
                       request.op == kIoOpDiscard || request.op == kIoOpWriteZeroes;
  if (data_op && (request.start_sector > (UINT64_MAX >> 9) || offset > backing_.size_bytes ||
                  length > backing_.size_bytes - offset)) {
    Finish(ctx, tag, -EIO);  // past the backing (cannot come from the kernel)
    return;
  }
  const bool changes = request.op == kIoOpWrite || request.op == kIoOpDiscard ||
                       request.op == kIoOpWriteZeroes;
  if (changes && read_only_) {
    Finish(ctx, tag, -EROFS);
    return;
  }
  if (changes && observer_ != nullptr && length != 0) {
    if (observer_->BeforeWriteMayBlock(offset, length) &&
        preparer_->Defer(ctx, request, offset, length)) {
      return;  // continued in OnTargetCompletion (kPreparedSub)
    }
    if (int err = observer_->BeforeWrite(offset, length); err != 0) {
      Finish(ctx, tag, err < 0 ? err : -err);
      return;
    }
  }
  Execute(ctx, request);
}

void FileTarget::Execute(IoContext& ctx, const IoRequest& request) {
  const int tag = request.tag;
  const uint64_t offset = request.start_sector << 9;
  const uint64_t length = uint64_t{request.nr_sectors} << 9;
  switch (request.op) {
    case kIoOpRead:
    case kIoOpWrite: {
      Pending& p = PendingFor(ctx)[tag];
      p.op = request.op;
      p.fua = request.op == kIoOpWrite && (request.flags & kIoFFua);
      p.offset = offset;
      p.length = static_cast<uint32_t>(length);
      p.done = 0;
      p.buffer = request.buffer;
      if (request.op == kIoOpRead) {
        counters_.reads.fetch_add(1, std::memory_order_relaxed);
        counters_.bytes_read.fetch_add(length, std::memory_order_relaxed);
      } else {
        counters_.writes.fetch_add(1, std::memory_order_relaxed);
        counters_.bytes_written.fetch_add(length, std::memory_order_relaxed);
        if (p.fua) counters_.fua_writes.fetch_add(1, std::memory_order_relaxed);
      }
      if (length == 0) {
        Finish(ctx, tag, 0);
        return;
      }
      Issue(ctx, tag, p);
      return;
    }
    case kIoOpFlush: {
      counters_.flushes.fetch_add(1, std::memory_order_relaxed);
      io_uring_sqe* sqe = GetSqe(ctx);
      if (sqe == nullptr) {
        Finish(ctx, tag, fdatasync(fd_) == 0 ? 0 : -errno);
        return;
      }
      io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
      sqe->user_data = ctx.TargetUserData(tag, kSubFlush);
      return;
    }
    case kIoOpDiscard:
      counters_.discards.fetch_add(1, std::memory_order_relaxed);
      Finish(ctx, tag, Discard(offset, length));
      return;
    case kIoOpWriteZeroes:
      counters_.write_zeroes.fetch_add(1, std::memory_order_relaxed);
      Finish(ctx, tag, WriteZeroes(offset, length, request.flags & kIoFNoUnmap));
      return;
    default:
      Finish(ctx, tag, -EOPNOTSUPP);
      return;
  }
}

void FileTarget::Issue(IoContext& ctx, int tag, const Pending& p) {
  io_uring_sqe* sqe = GetSqe(ctx);
  if (sqe == nullptr) {
    Finish(ctx, tag, p.done > 0 ? static_cast<int>(p.done) : -EAGAIN);
    return;
  }
  uint8_t* buffer = p.buffer + p.done;
  const unsigned left = p.length - p.done;
  const uint64_t at = p.offset + p.done;
  if (p.op == kIoOpRead) {
    io_uring_prep_read(sqe, fd_, buffer, left, at);
  } else {
    io_uring_prep_write(sqe, fd_, buffer, left, at);
    if (p.fua) sqe->rw_flags = RWF_DSYNC;
  }
  sqe->user_data = ctx.TargetUserData(tag, kSubReadWrite);
}

void FileTarget::OnTargetCompletion(IoContext& ctx, int tag, uint32_t sub, int res) {
  if (sub == WritePreparer::kPreparedSub) {
    for (const WritePreparer::Prepared& prepared : preparer_->TakeFinished(ctx)) {
      if (prepared.result != 0) {
        Finish(ctx, prepared.request.tag, prepared.result);
      } else {
        Execute(ctx, prepared.request);
      }
    }
    return;
  }
  if (sub == kSubFlush) {
    Finish(ctx, tag, res < 0 ? res : 0);
    return;
  }
  Pending& p = PendingFor(ctx)[tag];
  if (res == -EAGAIN || res == -EINTR) {
    Issue(ctx, tag, p);
    return;
  }
  if (res < 0) {
    Finish(ctx, tag, res);
    return;
  }
  if (res == 0) {
    // End of file inside the device (the backing shrank) or a device refusing to progress.
    Finish(ctx, tag, -EIO);
    return;
  }
  p.done += static_cast<uint32_t>(res);
  if (p.done < p.length) {
    Issue(ctx, tag, p);  // a short transfer: continue where it stopped
    return;
  }
  Finish(ctx, tag, static_cast<int>(p.done));
}

int FileTarget::Discard(uint64_t offset, uint64_t length) {
  if (length == 0) return 0;
  if (backing_.block_device) {
    uint64_t range[2] = {offset, length};
    return ioctl(fd_, BLKDISCARD, range) == 0 ? 0 : -errno;
  }
  return Fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

int FileTarget::WriteZeroes(uint64_t offset, uint64_t length, bool no_unmap) {
  if (length == 0) return 0;
  if (backing_.block_device) {
    uint64_t range[2] = {offset, length};
    return ioctl(fd_, BLKZEROOUT, range) == 0 ? 0 : -errno;
  }
  const int punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  const int zero_range = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
  int ret;
  if (no_unmap) {
    // The blocks must stay allocated.
    ret = Fallocate(fd_, zero_range, offset, length);
    if (ret != -EOPNOTSUPP) return ret;
    // No ZERO_RANGE (tmpfs): punch, then allocate the range again.
    ret = Fallocate(fd_, punch, offset, length);
    if (ret == 0) ret = Fallocate(fd_, FALLOC_FL_KEEP_SIZE, offset, length);
    if (ret != -EOPNOTSUPP) return ret;
  } else {
    ret = Fallocate(fd_, punch, offset, length);
    if (ret != -EOPNOTSUPP) return ret;
    ret = Fallocate(fd_, zero_range, offset, length);
    if (ret != -EOPNOTSUPP) return ret;
  }
  return WriteZeroBuffers(offset, length);
}

int FileTarget::WriteZeroBuffers(uint64_t offset, uint64_t length) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (zeroes_ == nullptr) {
      void* buffer = nullptr;
      if (posix_memalign(&buffer, 4096, kZeroBufferBytes) != 0) return -ENOMEM;
      memset(buffer, 0, kZeroBufferBytes);
      zeroes_ = static_cast<uint8_t*>(buffer);
    }
  }
  while (length > 0) {
    size_t chunk = length < kZeroBufferBytes ? static_cast<size_t>(length) : kZeroBufferBytes;
    ssize_t n = pwrite(fd_, zeroes_, chunk, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EIO;
    offset += static_cast<uint64_t>(n);
    length -= static_cast<uint64_t>(n);
  }
  return 0;
}

}  // namespace cbt::ublk
