#include "ublk/cow/cow_store.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "backend/errno_status.h"
#include "ublk/cow/aligned_io.h"

namespace cbt::ublk {
namespace {

using ::cbt::agent::ErrnoStatus;
using ::cbt::agent::ErrnoText;

// Per-thread bounce buffers (one chunk at most each). Two of them because WriteImage() copies a
// chunk (copy buffer) and then does its read-modify-write (I/O buffer) on the same thread.
AlignedBuffer& CopyBuffer() {
  thread_local AlignedBuffer buffer;
  return buffer;
}
AlignedBuffer& IoBuffer() {
  thread_local AlignedBuffer buffer;
  return buffer;
}

bool IsAligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kIoAlign == 0; }

}  // namespace

absl::StatusOr<std::unique_ptr<CowStore>> CowStore::Create(int origin_fd, uint64_t capacity,
                                                           uint64_t chunk_size,
                                                           std::shared_ptr<DiffStorage> storage) {
  if (storage == nullptr) return absl::InvalidArgumentError("no diff storage given");
  if (!IsPowerOfTwo(chunk_size) || chunk_size < kIoAlign || chunk_size > kMaxChunkSize) {
    return absl::InvalidArgumentError(absl::StrCat("chunk size ", chunk_size,
                                                   " is not a power of two in [", kIoAlign,
                                                   ", ", kMaxChunkSize, "]"));
  }
  if (storage->chunk_size() != chunk_size) {
    return absl::InvalidArgumentError(absl::StrCat("diff storage was opened for chunks of ",
                                                   storage->chunk_size(),
                                                   " bytes, the store uses ", chunk_size));
  }
  if (capacity == 0 || capacity % kSectorSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("capacity ", capacity, " is not a positive multiple of ", kSectorSize));
  }
  const uint64_t chunk_count = capacity / chunk_size + (capacity % chunk_size != 0 ? 1 : 0);
  constexpr uint64_t kMaxSlots = std::numeric_limits<uint32_t>::max() - kPreservedBase;
  if (chunk_count > kMaxSlots || storage->capacity_chunks() > kMaxSlots) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk size ", chunk_size, " is too small for ", capacity,
        " bytes of origin and a diff storage limit of ", storage->limit_bytes(),
        " bytes (at most ", kMaxSlots, " chunks)"));
  }

  struct stat origin {};
  if (origin_fd < 0 || ::fstat(origin_fd, &origin) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("origin fd ", origin_fd, " is not open"));
  }
  uint64_t origin_size = 0;
  if (S_ISBLK(origin.st_mode)) {
    if (::ioctl(origin_fd, BLKGETSIZE64, &origin_size) != 0) {
      return ErrnoStatus(errno, "get the size of the origin device");
    }
  } else if (S_ISREG(origin.st_mode)) {
    origin_size = static_cast<uint64_t>(origin.st_size);
  } else {
    return absl::InvalidArgumentError("origin fd is neither a block device nor a regular file");
  }
  if (origin_size < capacity) {
    return absl::InvalidArgumentError(absl::StrCat("capacity ", capacity,
                                                   " is larger than the origin (", origin_size,
                                                   " bytes)"));
  }
  struct stat diff {};
  if (::fstat(storage->fd(), &diff) != 0) return ErrnoStatus(errno, "stat the diff storage");
  const bool on_origin =
      S_ISBLK(origin.st_mode)
          ? (S_ISBLK(diff.st_mode) ? diff.st_rdev == origin.st_rdev
                                   : diff.st_dev == origin.st_rdev)
          : (diff.st_dev == origin.st_dev && diff.st_ino == origin.st_ino);
  if (on_origin) {
    return absl::FailedPreconditionError(absl::StrCat(
        "diff storage (", storage->describe(), ") lives on the origin device itself"));
  }

  return std::unique_ptr<CowStore>(
      new CowStore(origin_fd, capacity, chunk_size, std::move(storage)));
}

CowStore::CowStore(int origin_fd, uint64_t capacity, uint64_t chunk_size,
                   std::shared_ptr<DiffStorage> storage)
    : origin_fd_(origin_fd),
      capacity_(capacity),
      chunk_size_(chunk_size),
      chunk_count_(capacity / chunk_size + (capacity % chunk_size != 0 ? 1 : 0)),
      storage_(std::move(storage)),
      // Value-initialized: every chunk starts kUntouched.
      state_(new std::atomic<uint32_t>[chunk_count_]()) {}

CowStore::~CowStore() = default;

uint64_t CowStore::ChunkLength(uint64_t index) const {
  const uint64_t start = index * chunk_size_;
  return std::min(chunk_size_, capacity_ - start);
}

absl::Status CowStore::CheckRange(const char* what, uint64_t offset, uint64_t length) const {
  if (offset > capacity_ || length > capacity_ - offset) {
    return absl::OutOfRangeError(absl::StrCat(what, " of ", length, " bytes at ", offset,
                                              " lies past the capacity of ", capacity_,
                                              " bytes"));
  }
  return absl::OkStatus();
}

absl::Status CowStore::CorruptedError(const char* what) const {
  const int err = error_code();
  return absl::DataLossError(absl::StrCat(what, ": the snapshot is corrupted: ", ErrnoText(err),
                                          " (errno ", err, ")"));
}

void CowStore::SetCorruptionCallback(std::function<void(int errno_value)> callback) {
  std::lock_guard<std::mutex> lock(callback_mu_);
  callback_ = std::move(callback);
}

void CowStore::AttachCbtMap(cbt::CbtMap* map) { cbt_map_.store(map, std::memory_order_release); }

bool CowStore::MarkCorrupted(int err) {
  if (err <= 0) err = EIO;
  int expected = 0;
  return error_.compare_exchange_strong(expected, err, std::memory_order_seq_cst);
}

void CowStore::FireCallback(int err) {
  std::function<void(int)> callback;
  {
    std::lock_guard<std::mutex> lock(callback_mu_);
    callback = callback_;
  }
  if (callback) callback(err);
}

void CowStore::Corrupt(int err) {
  if (MarkCorrupted(err)) FireCallback(error_code());
}

bool CowStore::NeedsCopy(uint64_t offset, uint64_t length) const {
  if (length == 0 || offset > capacity_ || length > capacity_ - offset || corrupted()) {
    return false;
  }
  const uint64_t last = (offset + length - 1) / chunk_size_;
  for (uint64_t index = offset / chunk_size_; index <= last; ++index) {
    if (state_[index].load(std::memory_order_acquire) < kPreservedBase) return true;
  }
  return false;
}

uint32_t CowStore::Preserve(uint64_t index) {
  std::atomic<uint32_t>& state = state_[index];
  for (;;) {
    uint32_t s = state.load(std::memory_order_acquire);
    if (s >= kPreservedBase) return s;
    if (corrupted()) return kUntouched;
    if (s == kCopying) {
      state.wait(kCopying, std::memory_order_acquire);
      continue;
    }
    if (!state.compare_exchange_weak(s, kCopying, std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
      continue;
    }

    // This thread owns the copy of the chunk.
    int err = 0;
    uint64_t slot = 0;
    absl::StatusOr<uint64_t> allocated = storage_->AllocateChunk();
    if (!allocated.ok()) {
      err = allocated.status().code() == absl::StatusCode::kResourceExhausted ? ENOSPC : EIO;
    } else {
      slot = *allocated;
      const uint64_t length = ChunkLength(index);
      const uint64_t stored = AlignUp(length, kIoAlign);
      uint8_t* buf = CopyBuffer().Get(chunk_size_);
      if (buf == nullptr) {
        err = ENOMEM;
      } else {
        err = PreadFull(origin_fd_, buf, length, index * chunk_size_);
        if (err == 0) {
          if (stored != length) std::memset(buf + length, 0, stored - length);
          err = PwriteFull(storage_->fd(), buf, stored, slot);
        }
      }
    }
    if (err != 0) {
      // Corrupted first, so that waiters woken by the state change see it, and so that an
      // image reader that observes the origin write this lets through sees it too.
      const bool first = MarkCorrupted(err);
      state.store(kUntouched, std::memory_order_release);
      state.notify_all();
      if (first) FireCallback(error_code());
      return kUntouched;
    }
    const uint32_t preserved = kPreservedBase + static_cast<uint32_t>(slot / chunk_size_);
    preserved_.fetch_add(1, std::memory_order_relaxed);
    state.store(preserved, std::memory_order_release);
    state.notify_all();
    return preserved;
  }
}

absl::Status CowStore::PrepareOriginWrite(uint64_t offset, uint64_t length) {
  if (length == 0) return absl::OkStatus();
  if (absl::Status s = CheckRange("origin write", offset, length); !s.ok()) return s;
  const uint64_t first = offset / chunk_size_;
  const uint64_t last = (offset + length - 1) / chunk_size_;
  for (uint64_t index = first; index <= last; ++index) {
    // Fast path: one acquire load per chunk once the chunk is preserved.
    if (state_[index].load(std::memory_order_acquire) >= kPreservedBase) continue;
    if (corrupted()) break;  // nothing is copied any more; the write proceeds
    Preserve(index);
  }
  // The caller's origin write follows. The release fence orders it (formally: the device
  // write, seen as a relaxed store) after every state/corruption load and store above; this is
  // the writer half of the argument in ReadPiece(). It costs nothing on x86.
  std::atomic_thread_fence(std::memory_order_release);
  return absl::OkStatus();
}

// Why an image read never returns data the origin received after the snapshot:
//
// An origin write W to chunk c is issued only after PrepareOriginWrite() returned, i.e. after
// its thread saw state[c] >= kPreservedBase (the copy made before W is in the diff storage)
// or saw the store corrupted, followed by a release fence.
//
// The reader treats state[c] (plus the corruption word) like a seqlock version:
//   s1 = state[c].load(acquire)   must be kUntouched
//   read the origin range         (the racy "data" read)
//   atomic_thread_fence(acquire)
//   s2 = state[c].load(relaxed), e = error_.load(relaxed)
//   accept only if s2 == kUntouched and e == 0, else retry from the top.
// Suppose the origin read observed (any part of) W. Modelling the device transfer as relaxed
// atomic accesses, the writer's release fence (before W) synchronizes with the reader's
// acquire fence (after the read), so the writer's load that returned "preserved"/"corrupted"
// happens-before the reader's s2/e loads; by read-read coherence s2 can then not return an
// earlier value of state[c] than kPreservedBase+slot, i.e. s2 != kUntouched - or, on the
// corrupted path, e != 0 (error_ is set before state[c] goes back to kUntouched). Either way
// the reader retries. In a retry it sees kCopying (waits on the futex until the copy is
// published), a slot (reads the preserved copy, which was written before the release store
// that published it), or corruption (fails with DataLoss). So an accepted origin read saw no
// post-snapshot write: no torn and no new data. The cost is one extra relaxed load per piece
// and, rarely, a second read when a copy races with the image read.
absl::Status CowStore::ReadPiece(uint64_t index, uint64_t in_chunk, uint64_t length,
                                 uint8_t* out) {
  std::atomic<uint32_t>& state = state_[index];
  const uint64_t a0 = AlignDown(in_chunk, kIoAlign);
  const uint64_t a1 = AlignUp(in_chunk + length, kIoAlign);  // <= chunk_size_
  const bool direct = a0 == in_chunk && a1 == in_chunk + length && IsAligned(out);
  for (;;) {
    if (corrupted()) return CorruptedError("image read");
    const uint32_t s1 = state.load(std::memory_order_acquire);
    if (s1 == kCopying) {
      state.wait(kCopying, std::memory_order_acquire);
      continue;
    }
    uint8_t* buf = direct ? out : IoBuffer().Get(a1 - a0);
    if (buf == nullptr) return absl::ResourceExhaustedError("no memory for an image read buffer");
    if (s1 >= kPreservedBase) {
      const uint64_t at = SlotOffset(s1) + a0;
      if (int err = PreadFull(storage_->fd(), buf, a1 - a0, at); err != 0) {
        return ErrnoStatus(err, absl::StrCat("image read: read diff storage at ", at),
                           absl::StatusCode::kDataLoss);
      }
      if (!direct) std::memcpy(out, buf + (in_chunk - a0), length);
      return absl::OkStatus();
    }
    // Unpreserved: read the origin (only up to its end), then validate as explained above.
    const uint64_t chunk_start = index * chunk_size_;
    const uint64_t end = std::min(a1, ChunkLength(index));
    if (origin_read_hook_) origin_read_hook_(index);
    if (int err = PreadFull(origin_fd_, buf, end - a0, chunk_start + a0); err != 0) {
      return ErrnoStatus(err, absl::StrCat("image read: read the origin at ", chunk_start + a0));
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (state.load(std::memory_order_relaxed) == kUntouched &&
        error_.load(std::memory_order_relaxed) == 0) {
      if (!direct) std::memcpy(out, buf + (in_chunk - a0), length);
      return absl::OkStatus();
    }
  }
}

absl::Status CowStore::ReadImage(uint64_t offset, uint64_t length, uint8_t* out) {
  if (absl::Status s = CheckRange("image read", offset, length); !s.ok()) return s;
  if (corrupted()) return CorruptedError("image read");
  if (absl::Status s = ForEachChunkPiece(
          offset, length,
          [&](uint64_t index, uint64_t in_chunk, uint64_t n, uint64_t at) {
            return ReadPiece(index, in_chunk, n, out + at);
          });
      !s.ok()) {
    return s;
  }
  // Like blksnap, a snapshot that got corrupted meanwhile fails the read.
  if (corrupted()) return CorruptedError("image read");
  return absl::OkStatus();
}

absl::Status CowStore::WritePiece(uint64_t index, uint64_t in_chunk, uint64_t length,
                                  const uint8_t* data) {
  std::lock_guard<std::mutex> lock(write_locks_[index % kWriteLocks]);
  const uint32_t s = Preserve(index);
  if (s < kPreservedBase) return CorruptedError("image write");
  const uint64_t a0 = AlignDown(in_chunk, kIoAlign);
  const uint64_t a1 = AlignUp(in_chunk + length, kIoAlign);  // <= chunk_size_
  const uint64_t slot = SlotOffset(s);
  const int fd = storage_->fd();
  const bool aligned = a0 == in_chunk && a1 == in_chunk + length;
  int err = 0;
  if (aligned && IsAligned(data)) {
    err = PwriteFull(fd, data, length, slot + a0);
  } else {
    uint8_t* buf = IoBuffer().Get(a1 - a0);
    if (buf == nullptr) return absl::ResourceExhaustedError("no memory for an image write buffer");
    // Read-modify-write of the partial head and tail blocks only.
    if (in_chunk != a0) err = PreadFull(fd, buf, kIoAlign, slot + a0);
    const uint64_t tail = a1 - kIoAlign;
    if (err == 0 && in_chunk + length != a1 && (tail != a0 || in_chunk == a0)) {
      err = PreadFull(fd, buf + (tail - a0), kIoAlign, slot + tail);
    }
    if (err == 0) {
      std::memcpy(buf + (in_chunk - a0), data, length);
      err = PwriteFull(fd, buf, a1 - a0, slot + a0);
    }
  }
  if (err != 0) {
    // The stored copy is now in an unknown state: the image is lost (blksnap marks the diff
    // area corrupted on a failed store as well).
    Corrupt(err);
    return ErrnoStatus(err, absl::StrCat("image write: write diff storage at ", slot + a0),
                       absl::StatusCode::kDataLoss);
  }
  return absl::OkStatus();
}

absl::Status CowStore::WriteImage(uint64_t offset, uint64_t length, const uint8_t* data) {
  if (absl::Status s = CheckRange("image write", offset, length); !s.ok()) return s;
  if (corrupted()) return CorruptedError("image write");
  if (length == 0) return absl::OkStatus();
  if (cbt::CbtMap* map = cbt_map_.load(std::memory_order_acquire); map != nullptr) {
    // Marked before the data changes, so a failure half-way still shows in the CBT.
    const uint64_t first = offset / kSectorSize;
    const uint64_t last = (offset + length - 1) / kSectorSize;
    absl::Status s = map->SetBoth(first, last - first + 1);
    if (!s.ok() && !map->corrupted()) return s;
  }
  return ForEachChunkPiece(offset, length,
                           [&](uint64_t index, uint64_t in_chunk, uint64_t n, uint64_t at) {
                             return WritePiece(index, in_chunk, n, data + at);
                           });
}

absl::Status CowStore::FlushImage() {
  if (corrupted()) return CorruptedError("image flush");
  if (::fdatasync(storage_->fd()) != 0) {
    const int err = errno;
    return ErrnoStatus(err, "image flush: fdatasync of the diff storage",
                       absl::StatusCode::kDataLoss);
  }
  return absl::OkStatus();
}

}  // namespace cbt::ublk
