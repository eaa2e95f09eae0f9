// CowStore: the copy-on-write snapshot store of one ublk proxy device, with blksnap's snapshot
// semantics in userspace (reference/blksnap.md §2-3, blksnap-real-module.md §4).
//
// The origin device is split into chunks of chunk_size bytes (256 KiB by default, as blksnap's
// chunk_minimum_shift; the last chunk may be partial). Before a write/discard/write-zeroes
// reaches the origin, PrepareOriginWrite() copies every chunk it touches that was not preserved
// yet into the diff storage, once per chunk. The snapshot image reads preserved chunks from the
// diff storage and the others from the origin, and so always shows the origin as it was when
// the store was created. Image writes preserve the chunk first and then modify the stored copy;
// they never reach the origin.
//
// Overflow (diff storage full) or an I/O error while preserving a chunk corrupts the snapshot
// (ENOSPC for overflow, the errno otherwise): the corruption callback fires once, nothing is
// copied any more, image I/O fails with DataLoss (the image device answers -EIO), and the
// origin keeps working - PrepareOriginWrite() keeps returning OK.
//
// CBT: image writes must show up in both CBT maps (blksnap marks them with cbt_map_set_both).
// The store does that itself when a map is attached with AttachCbtMap().
//
// Thread safety: every method may be called from any thread, concurrently. The origin write path
// (ublk queue threads and the WritePreparer's threads) and the image device (its own queue
// thread) share one store.
//
// Concurrency design. One std::atomic<uint32_t> per chunk holds its state:
//   kUntouched (0) -> kCopying (1) -> kPreservedBase + slot (slot = storage offset / chunk)
// The fast path of PrepareOriginWrite() for an already-preserved chunk is one acquire load. The
// thread that wins the CAS untouched -> copying does the copy (pread origin, pwrite storage,
// both aligned for O_DIRECT) and then publishes the slot with a release store and notify_all;
// concurrent callers on that chunk block in atomic::wait (a futex) until the state leaves
// kCopying. If the copy fails, the store is marked corrupted first and the chunk goes back to
// kUntouched, so waiters wake up, see the corruption and let their write proceed.
// See ReadPiece() in cow_store.cc for why an image read never sees new origin data.
#ifndef CBT_AGENT_UBLK_COW_COW_STORE_H_
#define CBT_AGENT_UBLK_COW_COW_STORE_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/cbt_map.h"
#include "ublk/cow/diff_storage.h"

namespace cbt::ublk {

class CowStore {
 public:
  static constexpr uint64_t kDefaultChunkSize = 256 * 1024;
  static constexpr uint64_t kMaxChunkSize = 64ull << 20;  // blksnap chunk_maximum_shift 26

  // origin_fd: the real device/file (the agent keeps it open O_DIRECT|O_RDWR; it is not owned
  // and must stay open while the store lives); capacity in bytes (a positive multiple of 512, at
  // most the origin's size); chunk_size a power of two in [4096, 64 MiB], equal to the chunk
  // size `storage` was opened with. FailedPrecondition when the diff storage lives on the origin
  // itself (a file on the origin block device, or the same file/device). One storage may be
  // shared by the stores of every device in a snapshot: slots are handed out by the storage, so
  // the devices share its limit as blksnap's do.
  static absl::StatusOr<std::unique_ptr<CowStore>> Create(int origin_fd, uint64_t capacity,
                                                          uint64_t chunk_size,
                                                          std::shared_ptr<DiffStorage> storage);

  ~CowStore();
  CowStore(const CowStore&) = delete;
  CowStore& operator=(const CowStore&) = delete;

  // Origin side, before a write/discard/write-zeroes of [offset, offset+length) reaches the
  // origin: every chunk touched that was not yet preserved is read from the origin and written
  // to diff storage (once per chunk per snapshot; concurrent callers on the same chunk wait for
  // the one copy). Returns OK also when the store is corrupted (the write proceeds; nothing is
  // copied any more). When the diff storage is full, or a copy fails with an I/O error, the
  // store becomes corrupted (ENOSPC / the errno), the corruption callback fires once, and OK is
  // returned. OutOfRange (nothing copied) for a range past the capacity; length 0 is a no-op.
  absl::Status PrepareOriginWrite(uint64_t offset, uint64_t length);

  // Whether PrepareOriginWrite(offset, length) would copy (or wait for a copy of) a chunk: some
  // chunk of the range is not preserved yet and the store is not corrupted. A few atomic loads;
  // false for a range past the capacity.
  bool NeedsCopy(uint64_t offset, uint64_t length) const;

  // Image side: preserved chunks come from diff storage, the rest from the origin. DataLoss
  // once the store is corrupted (also when it gets corrupted during the read); OutOfRange for a
  // range past the capacity; origin/storage read errors as ErrnoStatus.
  absl::Status ReadImage(uint64_t offset, uint64_t length, uint8_t* out);

  // Image writes: any alignment, any length inside the capacity. Each chunk is preserved first
  // (copied from the origin if not yet), then the stored copy is modified. Never touches the
  // origin. Marks the range in both CBT maps when a map is attached (before writing). DataLoss
  // when corrupted (a preserve that overflows corrupts the store, as in blksnap).
  absl::Status WriteImage(uint64_t offset, uint64_t length, const uint8_t* data);

  // fdatasync of the diff storage. DataLoss when corrupted.
  absl::Status FlushImage();

  // Called once, on the thread that detected the corruption, with the positive errno (ENOSPC
  // for overflow). It must not call PrepareOriginWrite/ReadImage/WriteImage of this store;
  // the accessors are fine. Setting it after the corruption does not replay it.
  void SetCorruptionCallback(std::function<void(int errno_value)> callback);

  // Image writes mark [offset, offset+length) with CbtMap::SetBoth in `map` (nullptr detaches).
  // The map is not owned and must outlive the store or be detached first. A SetBoth failure
  // fails the write unless the map is corrupted (a corrupted map is reset at the next take).
  void AttachCbtMap(cbt::CbtMap* map);

  // Testing seam: called by an image read that found chunk `index` unpreserved, just before it
  // reads the chunk from the origin (the window in which a copy and the origin write after it
  // may race with the read). Set it before the store is used concurrently.
  void SetOriginReadHookForTesting(std::function<void(uint64_t index)> hook) {
    origin_read_hook_ = std::move(hook);
  }

  bool corrupted() const { return error_code() != 0; }
  int error_code() const { return error_.load(std::memory_order_acquire); }  // 0 or errno
  uint64_t used_bytes() const { return storage_->used_bytes(); }
  uint64_t preserved_chunks() const { return preserved_.load(std::memory_order_relaxed); }
  uint64_t chunk_size() const { return chunk_size_; }
  uint64_t capacity() const { return capacity_; }
  uint64_t chunk_count() const { return chunk_count_; }
  const DiffStorage& storage() const { return *storage_; }

 private:
  static constexpr uint32_t kUntouched = 0;
  static constexpr uint32_t kCopying = 1;
  static constexpr uint32_t kPreservedBase = 2;
  static constexpr size_t kWriteLocks = 64;

  CowStore(int origin_fd, uint64_t capacity, uint64_t chunk_size,
           std::shared_ptr<DiffStorage> storage);

  // Bytes of chunk `index` that lie inside the capacity.
  uint64_t ChunkLength(uint64_t index) const;
  // Makes sure chunk `index` is preserved. Returns its state (>= kPreservedBase) or, when the
  // store is (or becomes) corrupted, kUntouched.
  uint32_t Preserve(uint64_t index);
  // Marks the store corrupted with `err` (EIO if not positive); true for the first error only.
  bool MarkCorrupted(int err);
  void FireCallback(int err);
  // MarkCorrupted() and, the first time, FireCallback().
  void Corrupt(int err);
  absl::Status CorruptedError(const char* what) const;
  absl::Status CheckRange(const char* what, uint64_t offset, uint64_t length) const;
  uint64_t SlotOffset(uint32_t state) const {
    return static_cast<uint64_t>(state - kPreservedBase) * chunk_size_;
  }
  // Reads [in_chunk, in_chunk+length) of chunk `index` (one piece of ReadImage) into `out`.
  // Splits [offset, offset + length) at chunk boundaries and calls
  // piece(chunk index, offset in chunk, piece length, offset of the piece in the range) for each,
  // stopping at the first error.
  template <typename Piece>
  absl::Status ForEachChunkPiece(uint64_t offset, uint64_t length, Piece&& piece) const {
    for (uint64_t done = 0; done < length;) {
      const uint64_t pos = offset + done;
      const uint64_t index = pos / chunk_size_;
      const uint64_t in_chunk = pos - index * chunk_size_;
      const uint64_t n = std::min(length - done, chunk_size_ - in_chunk);
      if (absl::Status s = piece(index, in_chunk, n, done); !s.ok()) return s;
      done += n;
    }
    return absl::OkStatus();
  }
  absl::Status ReadPiece(uint64_t index, uint64_t in_chunk, uint64_t length, uint8_t* out);
  absl::Status WritePiece(uint64_t index, uint64_t in_chunk, uint64_t length,
                          const uint8_t* data);

  const int origin_fd_;
  const uint64_t capacity_;
  const uint64_t chunk_size_;
  const uint64_t chunk_count_;
  const std::shared_ptr<DiffStorage> storage_;
  const std::unique_ptr<std::atomic<uint32_t>[]> state_;

  std::atomic<int> error_{0};
  std::atomic<uint64_t> preserved_{0};
  std::atomic<cbt::CbtMap*> cbt_map_{nullptr};

  std::function<void(uint64_t)> origin_read_hook_;

  std::mutex callback_mu_;
  std::function<void(int)> callback_;  // guarded by callback_mu_

  // Serialize image writes per chunk (striped), so read-modify-write of a partial block in the
  // stored copy never loses a concurrent image write to the same block.
  std::array<std::mutex, kWriteLocks> write_locks_;
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_COW_COW_STORE_H_
