// Host-side tests of the ublk backend's pieces that need no ublk kernel: the saved CBT map
// (clean-stop persistence), the image target over a real CowStore, mount discovery, and the
// backend's refusal without ublk_drv. The backend itself runs in the guest (guest/*.sh).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "fake_io_context.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "ublk/backend/fs_freeze.h"
#include "ublk/backend/image_target.h"
#include "ublk/backend/saved_cbt_map.h"
#include "ublk/backend/ublk_backend.h"
#include "ublk/uapi.h"

namespace cbt::ublk {
namespace {

using testing::kKiB;
using testing::kMiB;
using testing::TempDir;

SavedCbtMapOwner Owner() { return {"/dev/loop7", {7, 7}, 3}; }

std::unique_ptr<CbtMap> MarkedMap() {
  auto map = CbtMap::Create(64 * kMiB / 512);
  EXPECT_TRUE(map.ok());
  EXPECT_TRUE((*map)->Set(0, 8).ok());
  (*map)->Switch();
  EXPECT_TRUE((*map)->Set(4096, 1).ok());
  return std::move(*map);
}

TEST(SavedCbtMapTest, ContinuesTheMapExactlyOnceAfterACleanStop) {
  TempDir dir;
  std::unique_ptr<CbtMap> map = MarkedMap();
  ASSERT_TRUE(SaveCbtMap(dir.path(), Owner(), map->ExportState()).ok());
  const std::string path = SavedCbtMapPath(dir.path(), {7, 7});
  EXPECT_EQ(access(path.c_str(), F_OK), 0);

  absl::StatusOr<CbtMapState> state = TakeSavedCbtMap(dir.path(), Owner());
  ASSERT_TRUE(state.ok()) << state.status();
  auto restored = CbtMap::FromState(*state);
  ASSERT_TRUE(restored.ok()) << restored.status();
  const CbtInfo want = map->Info(), got = (*restored)->Info();
  EXPECT_EQ(got.generation_id, want.generation_id);
  EXPECT_EQ(got.changes_number, want.changes_number);
  EXPECT_EQ(got.block_count, want.block_count);
  EXPECT_EQ((*restored)->ExportState().write_map, map->ExportState().write_map);
  EXPECT_EQ((*restored)->ExportState().read_map, map->ExportState().read_map);

  // Consumed: a crash after this start must not find the map again.
  EXPECT_NE(access(path.c_str(), F_OK), 0);
  EXPECT_TRUE(absl::IsNotFound(TakeSavedCbtMap(dir.path(), Owner()).status()));
}

TEST(SavedCbtMapTest, RefusesAMapOfAnotherDeviceOrProxyAndDropsIt) {
  TempDir dir;
  std::unique_ptr<CbtMap> map = MarkedMap();
  for (SavedCbtMapOwner other : {SavedCbtMapOwner{"/dev/loop8", {7, 7}, 3},
                                 SavedCbtMapOwner{"/dev/loop7", {7, 7}, 4}}) {
    ASSERT_TRUE(SaveCbtMap(dir.path(), Owner(), map->ExportState()).ok());
    absl::Status s = TakeSavedCbtMap(dir.path(), other).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(access(SavedCbtMapPath(dir.path(), {7, 7}).c_str(), F_OK), 0);
  }
}

TEST(SavedCbtMapTest, GarbageIsDataLoss) {
  TempDir dir;
  std::ofstream(SavedCbtMapPath(dir.path(), {7, 7})) << "not a protobuf \xff\xff\xff";
  EXPECT_EQ(TakeSavedCbtMap(dir.path(), Owner()).status().code(), absl::StatusCode::kDataLoss);
}

// An image target over a real CowStore: origin and diff storage are files in a temp dir.
class ImageTargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    origin_bytes_ = testing::RandomBytes(kOrigin, 1);
    testing::WriteFile(dir_.File("origin"), origin_bytes_);
    origin_fd_ = testing::OpenDirect(dir_.File("origin"));
    ASSERT_GE(origin_fd_, 0);
  }
  void TearDown() override { close(origin_fd_); }

  std::unique_ptr<CowStore> Store(uint64_t limit) {
    auto storage = DiffStorage::Open({dir_.path(), limit}, kChunk);
    EXPECT_TRUE(storage.ok()) << storage.status();
    auto store = CowStore::Create(origin_fd_, kOrigin, kChunk, std::move(*storage));
    EXPECT_TRUE(store.ok()) << store.status();
    return std::move(*store);
  }

  // One request through the target; returns its result.
  int Run(ImageTarget& target, uint8_t op, uint64_t offset, uint32_t length, uint8_t* buffer) {
    IoRequest r;
    r.tag = 0;
    r.op = op;
    r.start_sector = offset / 512;
    r.nr_sectors = length / 512;
    r.buffer = buffer;
    ctx_.completions.clear();
    target.Submit(ctx_, r);
    EXPECT_EQ(ctx_.completions.size(), 1u);
    return ctx_.completions.empty() ? -1 : ctx_.completions[0].second;
  }

  static constexpr uint64_t kOrigin = 4 * kMiB;
  static constexpr uint64_t kChunk = 256 * kKiB;
  TempDir dir_;
  FakeContext ctx_;
  std::vector<uint8_t> origin_bytes_;
  int origin_fd_ = -1;
};

TEST_F(ImageTargetTest, ReadsTheSnapshotWritesStayInTheImage) {
  std::unique_ptr<CowStore> store = Store(2 * kMiB);
  ImageTarget target(store.get());
  std::vector<uint8_t> buf(64 * kKiB);

  // The origin changes after the take: the image keeps the old bytes.
  ASSERT_TRUE(store->PrepareOriginWrite(kChunk - 4096, 8192).ok());
  std::vector<uint8_t> fresh(8192, 0xAB);
  const int buffered = open(dir_.File("origin").c_str(), O_RDWR | O_CLOEXEC);  // any alignment
  ASSERT_GE(buffered, 0);
  ASSERT_EQ(pwrite(buffered, fresh.data(), fresh.size(), kChunk - 4096), 8192);
  ASSERT_EQ(Run(target, kIoOpRead, kChunk - 32 * kKiB, buf.size(), buf.data()),
            static_cast<int>(buf.size()));
  EXPECT_EQ(0, memcmp(buf.data(), origin_bytes_.data() + kChunk - 32 * kKiB, buf.size()));

  // An image write across a chunk boundary reads back and never reaches the origin.
  std::vector<uint8_t> data(8192, 0x5C);
  ASSERT_EQ(Run(target, kIoOpWrite, 2 * kChunk - 512, 8192, data.data()), 8192);
  std::vector<uint8_t> back(8192);
  ASSERT_EQ(Run(target, kIoOpRead, 2 * kChunk - 512, 8192, back.data()), 8192);
  EXPECT_EQ(back, data);
  std::vector<uint8_t> on_origin(8192);
  ASSERT_EQ(pread(buffered, on_origin.data(), 8192, 2 * kChunk - 512), 8192);
  close(buffered);
  EXPECT_EQ(0, memcmp(on_origin.data(), origin_bytes_.data() + 2 * kChunk - 512, 8192));

  EXPECT_EQ(Run(target, kIoOpFlush, 0, 0, nullptr), 0);
  EXPECT_EQ(Run(target, kIoOpDiscard, 0, 4096, nullptr), -EOPNOTSUPP);
  EXPECT_EQ(target.failed_requests(), 1u);
}

TEST_F(ImageTargetTest, EveryRequestFailsWithEioOnceTheSnapshotOverflowed) {
  std::unique_ptr<CowStore> store = Store(kChunk);  // room for one chunk
  ImageTarget target(store.get());
  ASSERT_TRUE(store->PrepareOriginWrite(0, 2 * kChunk).ok());  // the second one overflows
  ASSERT_TRUE(store->corrupted());
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(Run(target, kIoOpRead, 0, 4096, buf.data()), -EIO);
  EXPECT_EQ(Run(target, kIoOpWrite, 0, 4096, buf.data()), -EIO);
  EXPECT_EQ(Run(target, kIoOpFlush, 0, 0, nullptr), -EIO);
}

TEST(MountPointsTest, FindsTheRootFileSystemByItsDevice) {
  struct stat st;
  ASSERT_EQ(stat("/", &st), 0);
  auto points = MountPointsOf(WholeDiskOf(st.st_dev));
  ASSERT_TRUE(points.ok()) << points.status();
  bool root = false;
  for (const std::string& p : *points) root = root || p == "/";
  EXPECT_TRUE(root) << "mount points of " << major(st.st_dev) << ":" << minor(st.st_dev);
  auto none = MountPointsOf(makedev(4095, 1048575));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(UblkBackendTest, WithoutTheDriverTheBackendSaysHowToGetIt) {
  UblkBackendOptions options;
  options.proxy.control_path = "/nonexistent/ublk-control";
  auto backend = NewUblkBackend(options, nullptr, nullptr);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(backend.status().message().find("modprobe ublk_drv"), std::string::npos)
      << backend.status();
}

}  // namespace
}  // namespace cbt::ublk
