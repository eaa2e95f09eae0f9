// FileTarget: a passthrough ublk target over a backing regular file or block device.
//
// READ/WRITE become IORING_OP_READ/WRITE on the queue's ring (asynchronous: the device's queue
// depth is real), short transfers are continued until done; a WRITE with FUA carries RWF_DSYNC.
// FLUSH is IORING_OP_FSYNC(DATASYNC). DISCARD and WRITE_ZEROES run synchronously on the queue
// thread: on a file, fallocate PUNCH_HOLE (discard, and write-zeroes without NOUNMAP) or
// ZERO_RANGE (write-zeroes with NOUNMAP; where the file system lacks it, e.g. tmpfs, punch +
// re-allocate, and as the last resort writing zeroes); on a block device BLKDISCARD/BLKZEROOUT.
//
// The backing is opened O_DIRECT when it allows it (the page cache would only duplicate the
// caller's), else buffered. Block sizes: a block device's own; for a file 512 (or the
// file system's direct-I/O alignment) logical, 4096 physical.
//
// A WriteObserver sees every content change — WRITE, WRITE_ZEROES, DISCARD — before the backing
// I/O is issued: where the agent marks CBT and does copy-on-write. When it says a call may block
// (a chunk to copy), the call runs on a WritePreparer thread and the request is issued on its
// queue thread afterwards, so the queue's other requests do not wait behind the copy.
#ifndef CBT_AGENT_UBLK_FILE_TARGET_H_
#define CBT_AGENT_UBLK_FILE_TARGET_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ublk/device.h"
#include "ublk/target.h"
#include "ublk/write_preparer.h"

namespace cbt::ublk {

class WriteObserver {
 public:
  virtual ~WriteObserver() = default;
  // 0 or -errno; called for WRITE, WRITE_ZEROES and DISCARD before the backing I/O, on the
  // queue thread - or, when BeforeWriteMayBlock said so, on a WritePreparer thread, concurrently
  // with the queue threads. An error fails the request with it and leaves the backing untouched.
  virtual int BeforeWrite(uint64_t offset, uint64_t length) = 0;
  // Queue thread, before BeforeWrite: whether that call may block for long. A cheap hint; a
  // wrong "false" only costs the queue the wait.
  virtual bool BeforeWriteMayBlock(uint64_t /*offset*/, uint64_t /*length*/) { return false; }
};

struct FileTargetOptions {
  bool direct_io = true;  // O_DIRECT when the backing accepts it
  bool read_only = false;
};

struct BackingInfo {
  std::string path;
  bool block_device = false;
  bool direct_io = false;  // opened O_DIRECT
  bool read_only = false;
  uint64_t size_bytes = 0;
  uint32_t logical_block_size = 512;
  uint32_t physical_block_size = 4096;
  bool discard = false;  // DISCARD is served (hole punching / BLKDISCARD works)
  uint32_t discard_granularity = 0;
};

class FileTarget : public Target {
 public:
  static absl::StatusOr<std::unique_ptr<FileTarget>> Open(const std::string& path,
                                                          const FileTargetOptions& options = {});
  ~FileTarget() override;
  FileTarget(const FileTarget&) = delete;
  FileTarget& operator=(const FileTarget&) = delete;

  const BackingInfo& backing() const { return backing_; }
  int fd() const { return fd_; }
  // Sets capacity, block sizes, read-only and the discard/write-zeroes limits of `options` to
  // match the backing.
  void ConfigureDevice(UblkDeviceOptions* options) const;
  // Set before the device serves requests; nullptr for none. Not owned; must outlive the
  // target (its BeforeWrite may run on the preparation threads until the target is destroyed).
  void set_write_observer(WriteObserver* observer);

  struct Stats {
    uint64_t reads = 0;
    uint64_t writes = 0;
    uint64_t fua_writes = 0;
    uint64_t flushes = 0;
    uint64_t discards = 0;
    uint64_t write_zeroes = 0;
    uint64_t errors = 0;  // requests completed with an error
    uint64_t bytes_read = 0;
    uint64_t bytes_written = 0;
    uint64_t deferred_writes = 0;  // whose BeforeWrite ran on a preparation thread
  };
  Stats stats() const;

  void Submit(IoContext& ctx, const IoRequest& request) override;
  void OnTargetCompletion(IoContext& ctx, int tag, uint32_t sub, int res) override;

  // The longest DISCARD/WRITE_ZEROES advertised: they run synchronously on the queue thread.
  static constexpr uint32_t kMaxSyncOpSectors = (64u << 20) >> 9;

 private:
  struct Pending {
    uint8_t op = 0;
    bool fua = false;
    uint64_t offset = 0;
    uint32_t length = 0;
    uint32_t done = 0;
    uint8_t* buffer = nullptr;
  };

  FileTarget(int fd, BackingInfo backing, bool read_only);
  std::vector<Pending>& PendingFor(IoContext& ctx);
  // The request's I/O, once validated and past the observer.
  void Execute(IoContext& ctx, const IoRequest& request);
  void Issue(IoContext& ctx, int tag, const Pending& p);
  void Finish(IoContext& ctx, int tag, int result);
  int Discard(uint64_t offset, uint64_t length);
  int WriteZeroes(uint64_t offset, uint64_t length, bool no_unmap);
  int WriteZeroBuffers(uint64_t offset, uint64_t length);

  const int fd_;
  const BackingInfo backing_;
  const bool read_only_;
  WriteObserver* observer_ = nullptr;
  std::unique_ptr<WritePreparer> preparer_;  // with an observer

  // Per-queue request state, created on a queue's first request.
  std::mutex mu_;
  std::unique_ptr<std::atomic<std::vector<Pending>*>[]> queues_;
  std::vector<std::unique_ptr<std::vector<Pending>>> owned_;
  uint8_t* zeroes_ = nullptr;  // 1 MiB, aligned for O_DIRECT; allocated on first use

  struct Counters {
    std::atomic<uint64_t> reads{0}, writes{0}, fua_writes{0}, flushes{0}, discards{0},
        write_zeroes{0}, errors{0}, bytes_read{0}, bytes_written{0};
  };
  Counters counters_;
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_FILE_TARGET_H_
