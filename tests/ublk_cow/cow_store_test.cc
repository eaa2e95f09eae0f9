// CowStore: snapshot image contents after origin writes, image writes, CBT marking, overflow.
// Every TEST_P runs once per diff storage kind: directory (O_TMPFILE), regular file, block
// device (a loop device; skipped where losetup does not work).
#include "ublk/cow/cow_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/cbt_map.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cbt::ublk {
namespace {

using testing::Checksum;
using testing::CountEntries;
using testing::kKiB;
using testing::kMiB;
using testing::LoopDevice;
using testing::RandomBytes;
using testing::TempDir;

enum class StorageKind { kTempFile, kRegularFile, kBlockDevice };

void PrintTo(StorageKind kind, std::ostream* os) {
  switch (kind) {
    case StorageKind::kTempFile:
      *os << "directory (O_TMPFILE)";
      return;
    case StorageKind::kRegularFile:
      *os << "regular file";
      return;
    case StorageKind::kBlockDevice:
      *os << "loop device";
      return;
  }
}

std::string KindName(const ::testing::TestParamInfo<StorageKind>& info) {
  switch (info.param) {
    case StorageKind::kTempFile:
      return "TmpfileDirectory";
    case StorageKind::kRegularFile:
      return "RegularFile";
    case StorageKind::kBlockDevice:
      return "LoopDevice";
  }
  return "Unknown";
}

class CowStoreTest : public ::testing::TestWithParam<StorageKind> {
 protected:
  ~CowStoreTest() override {
    store_.reset();
    if (origin_direct_fd_ >= 0) ::close(origin_direct_fd_);
    if (origin_buffered_fd_ >= 0) ::close(origin_buffered_fd_);
  }

  // An origin of `capacity` random bytes (the snapshot contents) and a store over it with a
  // diff storage limit of `limit` bytes. Sets skip_ when the storage kind is unavailable.
  void Start(uint64_t capacity, uint64_t chunk, uint64_t limit) {
    snapshot_ = RandomBytes(capacity, capacity * 31 + chunk);
    origin_ = snapshot_;
    origin_path_ = dir_.File("origin");
    testing::WriteFile(origin_path_, snapshot_);
    origin_direct_fd_ = testing::OpenDirect(origin_path_);
    ASSERT_GE(origin_direct_fd_, 0);
    origin_buffered_fd_ = ::open(origin_path_.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(origin_buffered_fd_, 0);

    std::string storage_path;
    switch (GetParam()) {
      case StorageKind::kTempFile:
        storage_path = storage_dir_ = dir_.Subdir("storage");
        break;
      case StorageKind::kRegularFile:
        storage_path = dir_.File("diff");
        testing::WriteFile(storage_path, {});
        break;
      case StorageKind::kBlockDevice: {
        const std::string backing = dir_.File("diff-backing");
        testing::WriteFile(backing, std::vector<uint8_t>(limit, 0));
        loop_ = std::make_unique<LoopDevice>(backing);
        if (!loop_->ok()) {
          skip_reason_ = loop_->reason();
          return;
        }
        storage_path = loop_->device();
        break;
      }
    }
    auto storage = DiffStorage::Open({storage_path, limit}, chunk);
    ASSERT_TRUE(storage.ok()) << storage.status();
    auto store = CowStore::Create(origin_direct_fd_, capacity, chunk, *std::move(storage));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // What the ublk queue does for a write: PrepareOriginWrite, then the write to the origin.
  void OriginWrite(uint64_t offset, const std::vector<uint8_t>& data) {
    ASSERT_TRUE(store_->PrepareOriginWrite(offset, data.size()).ok());
    ASSERT_EQ(::pwrite(origin_buffered_fd_, data.data(), data.size(), offset),
              static_cast<ssize_t>(data.size()));
    std::copy(data.begin(), data.end(), origin_.begin() + offset);
  }

  std::vector<uint8_t> Image(uint64_t offset, uint64_t length) {
    std::vector<uint8_t> out(length);
    absl::Status s = store_->ReadImage(offset, length, out.data());
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }
  std::vector<uint8_t> Slice(const std::vector<uint8_t>& v, uint64_t offset, uint64_t length) {
    return std::vector<uint8_t>(v.begin() + offset, v.begin() + offset + length);
  }
  void ExpectImageIs(const std::vector<uint8_t>& expected) {
    const std::vector<uint8_t> image = Image(0, expected.size());
    ASSERT_EQ(image.size(), expected.size());
    EXPECT_TRUE(image == expected) << "image checksum " << Checksum(image) << ", expected "
                                   << Checksum(expected) << ", first difference at "
                                   << FirstDifference(image, expected);
  }
  void ExpectOriginIs(const std::vector<uint8_t>& expected) {
    const std::vector<uint8_t> origin = testing::ReadFile(origin_path_, expected.size());
    EXPECT_TRUE(origin == expected) << "origin checksum " << Checksum(origin) << ", expected "
                                    << Checksum(expected) << ", first difference at "
                                    << FirstDifference(origin, expected);
  }
  static uint64_t FirstDifference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    for (uint64_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (a[i] != b[i]) return i;
    }
    return a.size() == b.size() ? UINT64_MAX : std::min(a.size(), b.size());
  }

  TempDir dir_;
  std::string origin_path_;
  std::string storage_dir_;
  std::vector<uint8_t> snapshot_;  // the origin when the store was created
  std::vector<uint8_t> origin_;    // the origin now
  int origin_direct_fd_ = -1;
  int origin_buffered_fd_ = -1;
  std::unique_ptr<LoopDevice> loop_;
  std::unique_ptr<CowStore> store_;
  std::string skip_reason_;
};

#define START_OR_SKIP(capacity, chunk, limit)                   \
  do {                                                          \
    ASSERT_NO_FATAL_FAILURE(Start(capacity, chunk, limit));     \
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;    \
  } while (0)

constexpr uint64_t kSmallChunk = 64 * kKiB;

TEST_P(CowStoreTest, ImageKeepsOldDataAfterAlignedOverwrites) {
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, 16 * kSmallChunk);
  EXPECT_EQ(store_->chunk_size(), kSmallChunk);
  OriginWrite(3 * kSmallChunk, RandomBytes(kSmallChunk, 1));
  OriginWrite(5 * kSmallChunk, RandomBytes(2 * kSmallChunk, 2));
  OriginWrite(0, RandomBytes(4096, 3));
  ExpectImageIs(snapshot_);
  ExpectOriginIs(origin_);
  EXPECT_NE(origin_, snapshot_);
}

TEST_P(CowStoreTest, ImageKeepsOldDataAfterUnalignedOverwrites) {
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, 16 * kSmallChunk);
  OriginWrite(1000, RandomBytes(3000, 4));
  OriginWrite(7 * kSmallChunk + 1, RandomBytes(1, 5));
  OriginWrite(9 * kSmallChunk + 511, RandomBytes(513, 6));
  ExpectImageIs(snapshot_);
  ExpectOriginIs(origin_);
  // Unaligned image reads of the touched ranges.
  EXPECT_EQ(Image(999, 3002), Slice(snapshot_, 999, 3002));
  EXPECT_EQ(Image(7 * kSmallChunk, 2), Slice(snapshot_, 7 * kSmallChunk, 2));
}

TEST_P(CowStoreTest, ImageKeepsOldDataAfterChunkStraddlingOverwrites) {
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, 16 * kSmallChunk);
  OriginWrite(3 * kSmallChunk - 700, RandomBytes(1400, 7));               // 2 chunks
  OriginWrite(6 * kSmallChunk - 4096, RandomBytes(2 * kSmallChunk, 8));   // 3 chunks
  ExpectImageIs(snapshot_);
  ExpectOriginIs(origin_);
  EXPECT_EQ(Image(3 * kSmallChunk - 1, 2), Slice(snapshot_, 3 * kSmallChunk - 1, 2));
  EXPECT_EQ(Image(5 * kSmallChunk - 3, kSmallChunk + 6),
            Slice(snapshot_, 5 * kSmallChunk - 3, kSmallChunk + 6));
  EXPECT_EQ(store_->preserved_chunks(), 5u);
}

TEST_P(CowStoreTest, LastPartialChunkWhenCapacityIsNotAChunkMultiple) {
  const uint64_t capacity = 4 * kSmallChunk + 20 * kKiB + 512;
  START_OR_SKIP(capacity, kSmallChunk, 8 * kSmallChunk);
  EXPECT_EQ(store_->chunk_count(), 5u);
  OriginWrite(capacity - 1000, RandomBytes(1000, 9));
  OriginWrite(4 * kSmallChunk - 100, RandomBytes(200, 10));
  ExpectImageIs(snapshot_);
  ExpectOriginIs(origin_);
  EXPECT_EQ(Image(capacity - 1, 1), Slice(snapshot_, capacity - 1, 1));
  EXPECT_EQ(Image(capacity - 5000, 5000), Slice(snapshot_, capacity - 5000, 5000));
  // Image writes into the partial chunk.
  const std::vector<uint8_t> data = RandomBytes(777, 11);
  ASSERT_TRUE(store_->WriteImage(capacity - 777, 777, data.data()).ok());
  EXPECT_EQ(Image(capacity - 777, 777), data);
  // Past the end.
  std::vector<uint8_t> buf(2);
  EXPECT_EQ(store_->ReadImage(capacity - 1, 2, buf.data()).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(store_->PrepareOriginWrite(capacity, 1).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(store_->WriteImage(capacity - 1, 2, buf.data()).code(),
            absl::StatusCode::kOutOfRange);
}

TEST_P(CowStoreTest, EachChunkIsCopiedOnce) {
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, 16 * kSmallChunk);
  EXPECT_EQ(store_->used_bytes(), 0u);
  EXPECT_TRUE(store_->NeedsCopy(2 * kSmallChunk + 10, 100));
  OriginWrite(2 * kSmallChunk + 10, RandomBytes(100, 12));
  EXPECT_EQ(store_->used_bytes(), kSmallChunk);
  EXPECT_FALSE(store_->NeedsCopy(2 * kSmallChunk, kSmallChunk));  // preserved
  EXPECT_TRUE(store_->NeedsCopy(2 * kSmallChunk, kSmallChunk + 1));  // reaches chunk 3
  EXPECT_FALSE(store_->NeedsCopy(2 * kSmallChunk, 0));
  EXPECT_FALSE(store_->NeedsCopy(16 * kSmallChunk, 1));  // past the capacity
  for (int i = 0; i < 5; ++i) {
    OriginWrite(2 * kSmallChunk + 4096 * i, RandomBytes(4096, 13 + i));
    EXPECT_EQ(store_->used_bytes(), kSmallChunk) << "rewrites of a preserved chunk copy nothing";
  }
  OriginWrite(8 * kSmallChunk - 1, RandomBytes(2, 20));  // chunks 7 and 8
  EXPECT_EQ(store_->used_bytes(), 3 * kSmallChunk);
  EXPECT_EQ(store_->preserved_chunks(), 3u);
  OriginWrite(7 * kSmallChunk, RandomBytes(2 * kSmallChunk, 21));
  EXPECT_EQ(store_->used_bytes(), 3 * kSmallChunk);
  // Zero-length prepares are no-ops.
  ASSERT_TRUE(store_->PrepareOriginWrite(11 * kSmallChunk, 0).ok());
  EXPECT_EQ(store_->preserved_chunks(), 3u);
  // Image reads never copy.
  Image(0, 16 * kSmallChunk);
  EXPECT_EQ(store_->preserved_chunks(), 3u);
  ExpectImageIs(snapshot_);
}

// blksnap tests/6100-snapimage_write.sh: 1 MiB written to the origin at 0, then the same 1 MiB
// written to the image at KiB offsets 126, 2048+126 and 4096+126 (sub-chunk and straddling
// 256 KiB chunks), read back exactly.
TEST_P(CowStoreTest, ImageWritesAtUnalignedStraddlingOffsetsReadBackExactly) {
  const uint64_t chunk = CowStore::kDefaultChunkSize;
  START_OR_SKIP(8 * kMiB, chunk, 16 * kMiB);
  const std::vector<uint8_t> pattern = RandomBytes(kMiB, 6100);
  OriginWrite(0, pattern);
  const std::vector<uint8_t> origin_after = origin_;
  std::vector<uint8_t> image = snapshot_;
  for (uint64_t kib : {126ull, 2048ull + 126, 4096ull + 126}) {
    const uint64_t offset = kib * kKiB;
    ASSERT_TRUE(store_->WriteImage(offset, pattern.size(), pattern.data()).ok());
    std::copy(pattern.begin(), pattern.end(), image.begin() + offset);
  }
  for (uint64_t kib : {126ull, 2048ull + 126, 4096ull + 126}) {
    EXPECT_EQ(Checksum(Image(kib * kKiB, kMiB)), Checksum(pattern)) << "offset " << kib << " KiB";
  }
  ExpectImageIs(image);
  ExpectOriginIs(origin_after);
  ASSERT_TRUE(store_->FlushImage().ok());
}

TEST_P(CowStoreTest, ByteGranularImageWritesAreExactAndNeverReachTheOrigin) {
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, 16 * kSmallChunk);
  std::vector<uint8_t> image = snapshot_;
  struct W {
    uint64_t offset, length;
  };
  const W writes[] = {{1, 1},          {513, 1000},       {4095, 2},
                      {kSmallChunk - 3, 7}, {3 * kSmallChunk + 100, 3 * kSmallChunk},
                      {10 * kSmallChunk, 4096}, {10 * kSmallChunk + 4096, 512},
                      {12 * kSmallChunk + 17, kSmallChunk - 17 - 9}};
  uint64_t seed = 100;
  for (const W& w : writes) {
    const std::vector<uint8_t> data = RandomBytes(w.length, seed++);
    ASSERT_TRUE(store_->WriteImage(w.offset, w.length, data.data()).ok());
    std::copy(data.begin(), data.end(), image.begin() + w.offset);
    EXPECT_EQ(Image(w.offset, w.length), data);
  }
  // Unaligned source buffer on an aligned range.
  std::vector<uint8_t> shifted(4096 + 1);
  const std::vector<uint8_t> data = RandomBytes(4096, 999);
  std::copy(data.begin(), data.end(), shifted.begin() + 1);
  ASSERT_TRUE(store_->WriteImage(14 * kSmallChunk, 4096, shifted.data() + 1).ok());
  std::copy(data.begin(), data.end(), image.begin() + 14 * kSmallChunk);
  ExpectImageIs(image);
  ExpectOriginIs(snapshot_);
  // Origin writes to chunks the image wrote do not replace the image's copy.
  OriginWrite(3 * kSmallChunk, RandomBytes(4 * kSmallChunk, 1000));
  ExpectImageIs(image);
  ExpectOriginIs(origin_);
}

TEST_P(CowStoreTest, ImageWritesMarkBothCbtMaps) {
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, 16 * kSmallChunk);
  auto map = cbt::CbtMap::Create(16 * kSmallChunk / 512);
  ASSERT_TRUE(map.ok()) << map.status();
  (*map)->Switch();  // the take: previous 1, active 2
  store_->AttachCbtMap(map->get());
  const cbt::CbtInfo info = (*map)->Info();
  ASSERT_EQ(info.block_size, 64 * kKiB);
  const std::vector<uint8_t> data = RandomBytes(10, 1);
  ASSERT_TRUE(store_->WriteImage(5 * 64 * kKiB + 65530, 10, data.data()).ok());  // blocks 5, 6
  std::vector<uint8_t> read_map(info.block_count);
  ASSERT_TRUE((*map)->ReadMap(0, read_map.size(), read_map.data()).ok());
  for (uint64_t b = 0; b < read_map.size(); ++b) {
    EXPECT_EQ(read_map[b], (b == 5 || b == 6) ? 1 : 0) << "block " << b;
  }
  // ...and the write map: after the next take the blocks show the newer number.
  (*map)->Switch();
  ASSERT_TRUE((*map)->ReadMap(0, read_map.size(), read_map.data()).ok());
  EXPECT_EQ(read_map[5], 2);
  EXPECT_EQ(read_map[6], 2);
  EXPECT_EQ(read_map[4], 0);
  // Origin writes are the ublk write path's business, not the store's.
  OriginWrite(0, RandomBytes(10, 2));
  ASSERT_TRUE((*map)->ReadMap(0, read_map.size(), read_map.data()).ok());
  EXPECT_EQ(read_map[0], 0);
  store_->AttachCbtMap(nullptr);
}

TEST_P(CowStoreTest, OverflowCorruptsTheSnapshotButTheOriginKeepsWorking) {
  constexpr uint64_t kLimitChunks = 4;
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, kLimitChunks * kSmallChunk);
  std::vector<int> events;
  store_->SetCorruptionCallback([&events](int err) { events.push_back(err); });
  for (uint64_t i = 0; i < kLimitChunks; ++i) {
    OriginWrite(i * 2 * kSmallChunk + 100, RandomBytes(1000, 40 + i));
  }
  EXPECT_FALSE(store_->corrupted());
  EXPECT_EQ(store_->used_bytes(), kLimitChunks * kSmallChunk);
  ExpectImageIs(snapshot_);

  OriginWrite(9 * kSmallChunk, RandomBytes(kSmallChunk, 50));  // chunk N+1: overflow
  EXPECT_TRUE(store_->corrupted());
  EXPECT_FALSE(store_->NeedsCopy(10 * kSmallChunk, kSmallChunk)) << "nothing is copied any more";
  EXPECT_EQ(store_->error_code(), ENOSPC);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], ENOSPC);

  std::vector<uint8_t> buf(4096);
  absl::Status read = store_->ReadImage(0, buf.size(), buf.data());
  EXPECT_EQ(read.code(), absl::StatusCode::kDataLoss) << read;
  EXPECT_NE(read.message().find("No space left on device"), std::string::npos) << read;
  // Even a chunk that was preserved before the overflow: the whole image is gone.
  EXPECT_EQ(store_->ReadImage(100, 10, buf.data()).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->WriteImage(0, 10, buf.data()).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->FlushImage().code(), absl::StatusCode::kDataLoss);

  // The origin keeps working: later writes (new and preserved chunks) go through, nothing more
  // is copied, no second event.
  OriginWrite(11 * kSmallChunk + 5, RandomBytes(3 * kSmallChunk, 51));
  OriginWrite(100, RandomBytes(10, 52));
  EXPECT_EQ(store_->used_bytes(), kLimitChunks * kSmallChunk);
  EXPECT_EQ(events.size(), 1u);
  ExpectOriginIs(origin_);
  EXPECT_NE(Checksum(origin_), Checksum(snapshot_));
}

TEST_P(CowStoreTest, ImageWriteThatOverflowsCorruptsToo) {
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, 1 * kSmallChunk);
  int fired = 0;
  store_->SetCorruptionCallback([&fired](int err) {
    EXPECT_EQ(err, ENOSPC);
    ++fired;
  });
  const std::vector<uint8_t> data = RandomBytes(100, 1);
  ASSERT_TRUE(store_->WriteImage(0, data.size(), data.data()).ok());
  absl::Status s = store_->WriteImage(kSmallChunk, data.size(), data.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(fired, 1);
  EXPECT_TRUE(store_->PrepareOriginWrite(0, 16 * kSmallChunk).ok());
  EXPECT_EQ(fired, 1);
  ExpectOriginIs(snapshot_);
}

// The race an image read must survive, made deterministic with the testing seam: after the read
// found a chunk unpreserved and before it reads the origin, an origin write preserves that chunk
// and overwrites it. The read must notice and serve the chunk from the diff storage.
TEST_P(CowStoreTest, ImageReadRacingWithACopyRetriesFromTheDiffStorage) {
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, 16 * kSmallChunk);
  std::vector<uint64_t> hooked;
  store_->SetOriginReadHookForTesting([&](uint64_t index) {
    hooked.push_back(index);
    if (hooked.size() == 1) OriginWrite(index * kSmallChunk, RandomBytes(kSmallChunk, 77));
  });
  // A read of chunks 3-4, unaligned at both ends.
  const uint64_t offset = 3 * kSmallChunk + 100;
  const uint64_t length = kSmallChunk + 200;
  EXPECT_EQ(Image(offset, length), Slice(snapshot_, offset, length));
  EXPECT_EQ(hooked, (std::vector<uint64_t>{3, 4})) << "chunk 3 came from storage the 2nd time";
  EXPECT_EQ(store_->preserved_chunks(), 1u);
  ExpectImageIs(snapshot_);
  ExpectOriginIs(origin_);
  store_->SetOriginReadHookForTesting(nullptr);
}

// Same race, but the copy overflows the diff storage: the read fails instead of returning the
// new origin data the overflow let through.
TEST_P(CowStoreTest, ImageReadRacingWithAnOverflowFailsInsteadOfReturningNewData) {
  START_OR_SKIP(16 * kSmallChunk, kSmallChunk, 1 * kSmallChunk);
  OriginWrite(0, RandomBytes(10, 1));  // the only slot
  bool wrote = false;
  store_->SetOriginReadHookForTesting([&](uint64_t index) {
    if (!wrote) {
      wrote = true;
      OriginWrite(index * kSmallChunk, RandomBytes(kSmallChunk, 78));
    }
  });
  std::vector<uint8_t> out(100);
  absl::Status s = store_->ReadImage(5 * kSmallChunk, out.size(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(wrote);
  EXPECT_EQ(store_->error_code(), ENOSPC);
  ExpectOriginIs(origin_);
  store_->SetOriginReadHookForTesting(nullptr);
}

INSTANTIATE_TEST_SUITE_P(StorageKinds, CowStoreTest,
                         ::testing::Values(StorageKind::kTempFile, StorageKind::kRegularFile,
                                           StorageKind::kBlockDevice),
                         KindName);

class CowStoreCreateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    origin_path_ = dir_.File("origin");
    testing::WriteFile(origin_path_, RandomBytes(kCapacity, 1));
    origin_fd_ = testing::OpenDirect(origin_path_);
    ASSERT_GE(origin_fd_, 0);
  }
  ~CowStoreCreateTest() override {
    if (origin_fd_ >= 0) ::close(origin_fd_);
  }
  std::unique_ptr<DiffStorage> Storage(uint64_t chunk = kSmallChunk) {
    auto storage = DiffStorage::Open({dir_.path(), 8 * chunk}, chunk);
    EXPECT_TRUE(storage.ok()) << storage.status();
    return storage.ok() ? *std::move(storage) : nullptr;
  }
  static constexpr uint64_t kCapacity = 16 * kSmallChunk;
  TempDir dir_;
  std::string origin_path_;
  int origin_fd_ = -1;
};

TEST_F(CowStoreCreateTest, RefusesInconsistentArguments) {
  EXPECT_EQ(CowStore::Create(origin_fd_, kCapacity, kSmallChunk, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CowStore::Create(origin_fd_, kCapacity, 2 * kSmallChunk, Storage()).status().code(),
            absl::StatusCode::kInvalidArgument)
      << "chunk size differs from the storage's";
  EXPECT_EQ(CowStore::Create(origin_fd_, kCapacity, 3 * 4096, Storage()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CowStore::Create(origin_fd_, 1000, kSmallChunk, Storage()).status().code(),
            absl::StatusCode::kInvalidArgument)
      << "capacity not a multiple of 512";
  EXPECT_EQ(CowStore::Create(origin_fd_, 0, kSmallChunk, Storage()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto too_big = CowStore::Create(origin_fd_, kCapacity + 512, kSmallChunk, Storage());
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument) << too_big.status();
  EXPECT_EQ(CowStore::Create(-1, kCapacity, kSmallChunk, Storage()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto ok = CowStore::Create(origin_fd_, kCapacity - 512, kSmallChunk, Storage());
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST_F(CowStoreCreateTest, RefusesDiffStorageThatIsTheOriginItself) {
  auto storage = DiffStorage::Open({origin_path_, 4 * kSmallChunk}, kSmallChunk);
  ASSERT_TRUE(storage.ok()) << storage.status();
  auto store = CowStore::Create(origin_fd_, kCapacity, kSmallChunk, *std::move(storage));
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
}

TEST_F(CowStoreCreateTest, TmpfileStorageLeavesNoFileBehind) {
  const std::string storage_dir = dir_.Subdir("storage");
  {
    auto storage = DiffStorage::Open({storage_dir, 8 * kSmallChunk}, kSmallChunk);
    ASSERT_TRUE(storage.ok()) << storage.status();
    auto store = CowStore::Create(origin_fd_, kCapacity, kSmallChunk, *std::move(storage));
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->PrepareOriginWrite(0, 3 * kSmallChunk).ok());
    EXPECT_EQ((*store)->used_bytes(), 3 * kSmallChunk);
    EXPECT_EQ(CountEntries(storage_dir), 0);
  }
  EXPECT_EQ(CountEntries(storage_dir), 0);
}

}  // namespace
}  // namespace cbt::ublk
