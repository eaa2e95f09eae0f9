// FileTarget against a real file, with a fake IoContext that owns a real io_uring (host; no
// ublk kernel needed).
#include "ublk/file_target.h"

#include <gtest/gtest.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "fake_io_context.h"
#include "ublk/queue.h"
#include "ublk/uapi.h"

namespace cbt::ublk {
namespace {

class RecordingObserver : public WriteObserver {
 public:
  int BeforeWrite(uint64_t offset, uint64_t length) override {
    calls.emplace_back(offset, length);
    return result;
  }
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  int result = 0;
};

struct AlignedBuffer {
  explicit AlignedBuffer(size_t size) : size(size) {
    void* p = nullptr;
    EXPECT_EQ(posix_memalign(&p, 4096, size), 0);
    data = static_cast<uint8_t*>(p);
    memset(data, 0, size);
  }
  ~AlignedBuffer() { free(data); }
  uint8_t* data;
  size_t size;
};

constexpr uint64_t kFileSize = 1 << 20;

class FileTargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/ublk-file-target-XXXXXX";
    int fd = mkstemp(name);
    ASSERT_GE(fd, 0);
    path_ = name;
    ASSERT_EQ(ftruncate(fd, kFileSize), 0);
    close(fd);
    auto target = FileTarget::Open(path_);
    ASSERT_TRUE(target.ok()) << target.status();
    target_ = std::move(*target);
    target_->set_write_observer(&observer_);
  }
  void TearDown() override { unlink(path_.c_str()); }

  IoRequest Request(int tag, uint8_t op, uint64_t sector, uint32_t sectors, uint8_t* buffer,
                    uint32_t flags = 0) {
    IoRequest r;
    r.tag = tag;
    r.op = op;
    r.flags = flags;
    r.start_sector = sector;
    r.nr_sectors = sectors;
    r.buffer = buffer;
    return r;
  }
  std::string FileBytes(uint64_t offset, size_t length) {
    std::string out(length, '\0');
    int fd = open(path_.c_str(), O_RDONLY);
    EXPECT_EQ(pread(fd, out.data(), length, static_cast<off_t>(offset)),
              static_cast<ssize_t>(length));
    close(fd);
    return out;
  }
  void FillFile(char c) {
    std::string bytes(kFileSize, c);
    int fd = open(path_.c_str(), O_WRONLY);
    ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    close(fd);
  }

  std::string path_;
  RecordingObserver observer_;  // declared first: it must outlive the target
  std::unique_ptr<FileTarget> target_;
};

// Says that writes touching [blocked_begin, blocked_end) may block, and blocks them in
// BeforeWrite until Release(): what a held snapshot's first write to a chunk does.
class BlockingObserver : public WriteObserver {
 public:
  BlockingObserver(uint64_t blocked_begin, uint64_t blocked_end)
      : begin_(blocked_begin), end_(blocked_end) {}
  bool BeforeWriteMayBlock(uint64_t offset, uint64_t length) override {
    return offset < end_ && offset + length > begin_;
  }
  int BeforeWrite(uint64_t offset, uint64_t length) override {
    std::unique_lock<std::mutex> lock(mu_);
    calls_.emplace_back(offset, length);
    if (!BeforeWriteMayBlock(offset, length)) return 0;
    released_cv_.wait(lock, [this] { return released_; });
    return blocked_result_;
  }
  void Release(int result) {
    std::lock_guard<std::mutex> lock(mu_);
    blocked_result_ = result;
    released_ = true;
    released_cv_.notify_all();
  }
  std::vector<std::pair<uint64_t, uint64_t>> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  const uint64_t begin_, end_;
  std::mutex mu_;
  std::condition_variable released_cv_;
  bool released_ = false;
  int blocked_result_ = 0;
  std::vector<std::pair<uint64_t, uint64_t>> calls_;
};

class DeferredWriteTest : public FileTargetTest {
 protected:
  void SetUp() override {
    FileTargetTest::SetUp();
    target_->set_write_observer(&blocking_);
  }
  void TearDown() override {
    blocking_.Release(0);  // nothing may stay blocked when the target goes
    target_.reset();
    FileTargetTest::TearDown();
  }
  BlockingObserver blocking_{0, 64 * 1024};
};

TEST_F(FileTargetTest, BackingGeometryAndDeviceOptions) {
  const BackingInfo& b = target_->backing();
  EXPECT_FALSE(b.block_device);
  EXPECT_EQ(b.size_bytes, kFileSize);
  EXPECT_GE(b.logical_block_size, 512u);
  UblkDeviceOptions options;
  target_->ConfigureDevice(&options);
  EXPECT_EQ(options.capacity_sectors, kFileSize >> 9);
  EXPECT_TRUE(ValidateDeviceOptions(options).ok());
  EXPECT_EQ(options.max_write_zeroes_sectors, FileTarget::kMaxSyncOpSectors);
  if (b.discard) {
    EXPECT_EQ(options.max_discard_sectors, FileTarget::kMaxSyncOpSectors);
  }
}

TEST_F(FileTargetTest, WriteThenReadBack) {
  FakeContext ctx;
  AlignedBuffer out(8192), in(8192);
  for (size_t i = 0; i < out.size; ++i) out.data[i] = static_cast<uint8_t>(i * 7 + 1);
  target_->Submit(ctx, Request(3, kIoOpWrite, 16, 16, out.data));
  ctx.RunUntil(*target_, 1);
  EXPECT_EQ(ctx.completions[0], std::make_pair(3, 8192));
  ASSERT_EQ(observer_.calls.size(), 1u);
  EXPECT_EQ(observer_.calls[0], std::make_pair(uint64_t{8192}, uint64_t{8192}));
  EXPECT_EQ(FileBytes(8192, 8192), std::string(reinterpret_cast<char*>(out.data), 8192));

  target_->Submit(ctx, Request(5, kIoOpRead, 16, 16, in.data));
  ctx.RunUntil(*target_, 2);
  EXPECT_EQ(ctx.completions[1], std::make_pair(5, 8192));
  EXPECT_EQ(memcmp(in.data, out.data, 8192), 0);
  EXPECT_EQ(observer_.calls.size(), 1u);  // reads are not observed

  FileTarget::Stats s = target_->stats();
  EXPECT_EQ(s.writes, 1u);
  EXPECT_EQ(s.reads, 1u);
  EXPECT_EQ(s.bytes_written, 8192u);
  EXPECT_EQ(s.bytes_read, 8192u);
  EXPECT_EQ(s.errors, 0u);
}

TEST_F(FileTargetTest, ManyRequestsInFlightOnTwoQueues) {
  FakeContext q0(0, 8), q1(1, 8);
  std::vector<std::unique_ptr<AlignedBuffer>> buffers;
  for (int tag = 0; tag < 8; ++tag) {
    for (FakeContext* ctx : {&q0, &q1}) {
      buffers.push_back(std::make_unique<AlignedBuffer>(4096));
      memset(buffers.back()->data, 'a' + tag + (ctx == &q1 ? 8 : 0), 4096);
      uint64_t sector = (ctx->queue_id() * 8 + tag) * 8;
      target_->Submit(*ctx, Request(tag, kIoOpWrite, sector, 8, buffers.back()->data));
    }
  }
  q0.RunUntil(*target_, 8);
  q1.RunUntil(*target_, 8);
  for (FakeContext* ctx : {&q0, &q1}) {
    for (auto [tag, result] : ctx->completions) EXPECT_EQ(result, 4096) << tag;
  }
  for (int block = 0; block < 16; ++block) {
    EXPECT_EQ(FileBytes(block * 4096, 4096), std::string(4096, 'a' + block)) << block;
  }
}

TEST_F(FileTargetTest, FuaWriteAndFlush) {
  FakeContext ctx;
  AlignedBuffer out(4096);
  memset(out.data, 'f', 4096);
  target_->Submit(ctx, Request(0, kIoOpWrite, 0, 8, out.data, kIoFFua));
  target_->Submit(ctx, Request(1, kIoOpFlush, 0, 0, nullptr));
  ctx.RunUntil(*target_, 2);
  for (auto [tag, result] : ctx.completions) EXPECT_EQ(result, tag == 0 ? 4096 : 0) << tag;
  FileTarget::Stats s = target_->stats();
  EXPECT_EQ(s.fua_writes, 1u);
  EXPECT_EQ(s.flushes, 1u);
  EXPECT_EQ(FileBytes(0, 4096), std::string(4096, 'f'));
}

TEST_F(FileTargetTest, DiscardAndWriteZeroesAreObservedAndZero) {
  if (!target_->backing().discard) GTEST_SKIP() << "no hole punching in /tmp";
  FillFile('x');
  FakeContext ctx;
  target_->Submit(ctx, Request(0, kIoOpDiscard, 8, 16, nullptr));                 // 4K..12K
  target_->Submit(ctx, Request(1, kIoOpWriteZeroes, 64, 8, nullptr, kIoFNoUnmap));  // 32K..36K
  target_->Submit(ctx, Request(2, kIoOpWriteZeroes, 128, 8, nullptr));             // 64K..68K
  ASSERT_EQ(ctx.completions.size(), 3u);  // synchronous
  for (auto [tag, result] : ctx.completions) EXPECT_EQ(result, 0) << tag;
  EXPECT_EQ(FileBytes(0, 4096), std::string(4096, 'x'));
  EXPECT_EQ(FileBytes(4096, 8192), std::string(8192, '\0'));
  EXPECT_EQ(FileBytes(12288, 4096), std::string(4096, 'x'));
  EXPECT_EQ(FileBytes(32768, 4096), std::string(4096, '\0'));
  EXPECT_EQ(FileBytes(65536, 4096), std::string(4096, '\0'));
  EXPECT_EQ(FileBytes(69632, 4096), std::string(4096, 'x'));
  std::vector<std::pair<uint64_t, uint64_t>> want = {
      {4096, 8192}, {32768, 4096}, {65536, 4096}};
  EXPECT_EQ(observer_.calls, want);
  FileTarget::Stats s = target_->stats();
  EXPECT_EQ(s.discards, 1u);
  EXPECT_EQ(s.write_zeroes, 2u);
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kFileSize);  // KEEP_SIZE
}

TEST_F(FileTargetTest, ObserverErrorFailsTheWriteAndLeavesTheFile) {
  FillFile('k');
  observer_.result = -ENOSPC;
  FakeContext ctx;
  AlignedBuffer out(4096);
  target_->Submit(ctx, Request(0, kIoOpWrite, 0, 8, out.data));
  target_->Submit(ctx, Request(1, kIoOpDiscard, 8, 8, nullptr));
  target_->Submit(ctx, Request(2, kIoOpWriteZeroes, 16, 8, nullptr));
  ASSERT_EQ(ctx.completions.size(), 3u);  // nothing was queued on the ring
  for (auto [tag, result] : ctx.completions) EXPECT_EQ(result, -ENOSPC) << tag;
  EXPECT_EQ(FileBytes(0, 12288), std::string(12288, 'k'));
  EXPECT_EQ(target_->stats().errors, 3u);
}

TEST_F(FileTargetTest, RejectsWhatCannotBeServed) {
  FakeContext ctx;
  AlignedBuffer buf(4096);
  target_->Submit(ctx, Request(0, kIoOpRead, (kFileSize >> 9) - 4, 8, buf.data));  // past the end
  target_->Submit(ctx, Request(1, kIoOpZoneOpen, 0, 8, nullptr));
  target_->Submit(ctx, Request(2, kIoOpWrite, ~uint64_t{0} >> 1, 8, buf.data));  // overflow
  ASSERT_EQ(ctx.completions.size(), 3u);
  EXPECT_EQ(ctx.completions[0].second, -EIO);
  EXPECT_EQ(ctx.completions[1].second, -EOPNOTSUPP);
  EXPECT_EQ(ctx.completions[2].second, -EIO);
  EXPECT_TRUE(observer_.calls.empty());
}

TEST_F(FileTargetTest, ReadOnlyTargetRefusesWrites) {
  FileTargetOptions options;
  options.read_only = true;
  auto ro = FileTarget::Open(path_, options);
  ASSERT_TRUE(ro.ok()) << ro.status();
  UblkDeviceOptions device;
  (*ro)->ConfigureDevice(&device);
  EXPECT_TRUE(device.read_only);
  EXPECT_EQ(device.max_write_zeroes_sectors, 0u);
  EXPECT_EQ(device.max_discard_sectors, 0u);
  FakeContext ctx;
  AlignedBuffer buf(4096);
  (*ro)->Submit(ctx, Request(0, kIoOpWrite, 0, 8, buf.data));
  (*ro)->Submit(ctx, Request(1, kIoOpRead, 0, 8, buf.data));
  ctx.RunUntil(**ro, 2);
  EXPECT_EQ(ctx.completions[0], std::make_pair(0, -EROFS));
  EXPECT_EQ(ctx.completions[1], std::make_pair(1, 4096));
}

// A write whose observer call may block (a chunk to copy for a snapshot) is prepared off the
// queue thread: a read and a write elsewhere complete while it waits, and it lands afterwards.
TEST_F(DeferredWriteTest, BlockedWriteDoesNotHoldUpTheQueue) {
  FillFile('a');
  FakeContext ctx;
  AlignedBuffer first(4096), read(4096), other(4096);
  memset(first.data, 'W', 4096);
  memset(other.data, 'X', 4096);
  target_->Submit(ctx, Request(0, kIoOpWrite, 8, 8, first.data));      // 4K: blocked
  target_->Submit(ctx, Request(1, kIoOpRead, 8, 8, read.data));        // the same 4K
  target_->Submit(ctx, Request(2, kIoOpWrite, 256, 8, other.data));    // 128K: not blocked
  ctx.RunUntil(*target_, 2);
  std::vector<std::pair<int, int>> done = ctx.completions;
  std::sort(done.begin(), done.end());  // the ring completes them in either order
  std::vector<std::pair<int, int>> want_done = {{1, 4096}, {2, 4096}};
  EXPECT_EQ(done, want_done);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(read.data), 4096), std::string(4096, 'a'));
  EXPECT_EQ(FileBytes(4096, 4096), std::string(4096, 'a')) << "the blocked write went through";
  EXPECT_EQ(FileBytes(131072, 4096), std::string(4096, 'X'));

  blocking_.Release(0);
  ctx.RunUntil(*target_, 3);
  EXPECT_EQ(ctx.completions[2], std::make_pair(0, 4096));
  EXPECT_EQ(FileBytes(4096, 4096), std::string(4096, 'W'));
  std::vector<std::pair<uint64_t, uint64_t>> calls = blocking_.calls();
  std::sort(calls.begin(), calls.end());
  std::vector<std::pair<uint64_t, uint64_t>> want = {{4096, 4096}, {131072, 4096}};
  EXPECT_EQ(calls, want);
  FileTarget::Stats s = target_->stats();
  EXPECT_EQ(s.deferred_writes, 1u);
  EXPECT_EQ(s.writes, 2u);
  EXPECT_EQ(s.errors, 0u);
}

// After preparation the request is served as it would have been: an observer error fails it
// and leaves the file alone; write-zeroes and writes on two queues complete on their own queue.
TEST_F(DeferredWriteTest, PreparedRequestsFinishOnTheirQueue) {
  FillFile('b');
  FakeContext q0(0, 8), q1(1, 8);
  AlignedBuffer w0(4096), w1(4096);
  memset(w0.data, '0', 4096);
  memset(w1.data, '1', 4096);
  target_->Submit(q0, Request(4, kIoOpWrite, 0, 8, w0.data));            // 0..4K
  target_->Submit(q1, Request(6, kIoOpWrite, 16, 8, w1.data));           // 8K..12K
  target_->Submit(q1, Request(7, kIoOpWriteZeroes, 32, 8, nullptr));     // 16K..20K
  EXPECT_TRUE(q0.completions.empty());
  EXPECT_TRUE(q1.completions.empty());
  blocking_.Release(-EIO);
  q0.RunUntil(*target_, 1);
  q1.RunUntil(*target_, 2);
  EXPECT_EQ(q0.completions[0], std::make_pair(4, -EIO));
  for (auto [tag, result] : q1.completions) EXPECT_EQ(result, -EIO) << tag;
  EXPECT_EQ(FileBytes(0, 20480), std::string(20480, 'b'));
  EXPECT_EQ(target_->stats().deferred_writes, 3u);
  EXPECT_EQ(target_->stats().errors, 3u);
}

TEST_F(DeferredWriteTest, PreparedWriteZeroesAndFuaWritesAreServed) {
  FillFile('c');
  FakeContext ctx;
  AlignedBuffer fua(4096);
  memset(fua.data, 'F', 4096);
  target_->Submit(ctx, Request(1, kIoOpWriteZeroes, 32, 8, nullptr));          // 16K..20K
  target_->Submit(ctx, Request(2, kIoOpWrite, 64, 8, fua.data, kIoFFua));      // 32K..36K
  blocking_.Release(0);
  ctx.RunUntil(*target_, 2);
  for (auto [tag, result] : ctx.completions) EXPECT_EQ(result, tag == 1 ? 0 : 4096) << tag;
  EXPECT_EQ(FileBytes(16384, 4096), std::string(4096, '\0'));
  EXPECT_EQ(FileBytes(32768, 4096), std::string(4096, 'F'));
  EXPECT_EQ(FileBytes(12288, 4096), std::string(4096, 'c'));
  FileTarget::Stats s = target_->stats();
  EXPECT_EQ(s.deferred_writes, 2u);
  EXPECT_EQ(s.write_zeroes, 1u);
  EXPECT_EQ(s.fua_writes, 1u);
}

TEST(FileTargetOpenTest, RefusesWhatIsNotAFileOrBlockDevice) {
  auto dir = FileTarget::Open("/tmp");
  EXPECT_FALSE(dir.ok());
  auto missing = FileTarget::Open("/nonexistent/backing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cbt::ublk
