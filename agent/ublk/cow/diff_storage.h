// DiffStorage: where the copy-on-write store keeps the chunks it preserved, with blksnap's three
// kinds of diff storage (reference/blksnap.md §3 step 3):
//
//   path is a directory     -> an unnamed O_TMPFILE in it, freed by the kernel when closed
//                              (tmpfs and /dev/shm allowed); grown with fallocate up to the limit.
//   path is a regular file  -> used (its contents are overwritten) and grown with fallocate up
//                              to the limit; never shrunk.
//   path is a block device  -> opened exclusively and used as is: capacity = min(device size,
//                              limit); no growth.
//
// Chunks are handed out in slots of chunk_size bytes from offset 0 up (blksnap skips the first
// 2 MiB of a file or device; the agent does not, so a limit of N chunks holds exactly N chunks).
// Growth of a file happens at allocation time in steps of kGrowStep (or less, up to the limit);
// a filesystem that cannot grow the file (ENOSPC/EDQUOT) is reported like the limit being
// reached, which the store turns into an overflow (corruption with ENOSPC), as blksnap does.
//
// The fd is opened O_DIRECT where the filesystem allows it and falls back to buffered I/O
// otherwise (what blksnap does on tmpfs); callers always use kIoAlign-aligned transfers.
//
// Thread safety: AllocateChunk() and the accessors may be called from any thread.
#ifndef CBT_AGENT_UBLK_COW_DIFF_STORAGE_H_
#define CBT_AGENT_UBLK_COW_DIFF_STORAGE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cbt::ublk {

struct DiffStorageOptions {
  std::string path;
  uint64_t limit_bytes = 0;
};

class DiffStorage {
 public:
  enum class Kind { kTempFile, kRegularFile, kBlockDevice };

  // Growth step of file-backed storage (blksnap grows by diff_storage_minimum, 1 GiB; a
  // smaller step keeps a single fallocate on the I/O path short).
  static constexpr uint64_t kGrowStep = 64ull << 20;

  // Opens the storage for chunks of `chunk_size` bytes (a power of two >= 4096).
  // InvalidArgument: empty path, limit 0 / not a multiple of 4096 / smaller than one chunk,
  //   bad chunk size, a path that is neither a directory, a regular file nor a block device.
  // NotFound: the path does not exist.
  // FailedPrecondition: the filesystem has no O_TMPFILE; the block device is in use (EBUSY) or
  //   smaller than one chunk.
  // ResourceExhausted: the first growth of a file failed for lack of space.
  // PermissionDenied etc.: other open/stat errors, mapped as in backend/errno_status.h.
  static absl::StatusOr<std::unique_ptr<DiffStorage>> Open(const DiffStorageOptions& options,
                                                          uint64_t chunk_size);

  ~DiffStorage();
  DiffStorage(const DiffStorage&) = delete;
  DiffStorage& operator=(const DiffStorage&) = delete;

  // Allocates the next chunk slot and returns its byte offset in fd() (a multiple of
  // chunk_size). ResourceExhausted when the limit is reached (or the filesystem is full).
  absl::StatusOr<uint64_t> AllocateChunk();

  int fd() const { return fd_; }
  // Bytes handed out by AllocateChunk() so far.
  uint64_t used_bytes() const { return used_.load(std::memory_order_relaxed); }
  // The effective limit: the requested limit, or min(device size, limit) for a block device.
  // At most limit_bytes() / chunk_size() chunks are allocated.
  uint64_t limit_bytes() const { return limit_; }
  uint64_t chunk_size() const { return chunk_size_; }
  uint64_t capacity_chunks() const { return limit_ / chunk_size_; }
  Kind kind() const { return kind_; }
  bool direct_io() const { return direct_io_; }
  // Bytes of the backing file reserved so far (the device size for a block device).
  uint64_t allocated_bytes() const;
  // E.g. "unnamed temporary file in /var/tmp (direct I/O), limit 1073741824 bytes".
  std::string describe() const;

 private:
  DiffStorage(Kind kind, std::string path, int fd, bool direct_io, uint64_t limit,
              uint64_t chunk_size, uint64_t allocated);
  // Grows the file so that [0, need) is backed; called with mu_ held.
  absl::Status GrowLocked(uint64_t need);

  const Kind kind_;
  const std::string path_;
  const int fd_;
  const bool direct_io_;
  const uint64_t limit_;
  const uint64_t chunk_size_;

  mutable std::mutex mu_;
  uint64_t allocated_;  // guarded by mu_
  std::atomic<uint64_t> used_{0};
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_COW_DIFF_STORAGE_H_
