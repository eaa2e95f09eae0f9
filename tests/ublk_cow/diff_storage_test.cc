// DiffStorage: the three storage kinds, growth up to the limit, and refusals.
#include "ublk/cow/diff_storage.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "test_util.h"

namespace cbt::ublk {
namespace {

using testing::CountEntries;
using testing::kKiB;
using testing::kMiB;
using testing::LoopDevice;
using testing::TempDir;

constexpr uint64_t kChunk = 256 * kKiB;

uint64_t FileSize(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return static_cast<uint64_t>(st.st_size);
}

TEST(DiffStorageTest, DirectoryGivesUnnamedTempFileThatLeavesNothingBehind) {
  TempDir dir;
  const std::string storage_dir = dir.Subdir("storage");
  {
    auto storage = DiffStorage::Open({storage_dir, 4 * kChunk}, kChunk);
    ASSERT_TRUE(storage.ok()) << storage.status();
    EXPECT_EQ((*storage)->kind(), DiffStorage::Kind::kTempFile);
    struct stat st {};
    ASSERT_EQ(::fstat((*storage)->fd(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_nlink, 0u) << "an O_TMPFILE has no name";
    EXPECT_EQ(CountEntries(storage_dir), 0);
    EXPECT_NE((*storage)->describe().find("temporary file in " + storage_dir),
              std::string::npos)
        << (*storage)->describe();
    EXPECT_EQ((*storage)->limit_bytes(), 4 * kChunk);
    EXPECT_EQ((*storage)->capacity_chunks(), 4u);
    for (uint64_t i = 0; i < 4; ++i) {
      auto slot = (*storage)->AllocateChunk();
      ASSERT_TRUE(slot.ok()) << slot.status();
      EXPECT_EQ(*slot, i * kChunk);
      EXPECT_EQ((*storage)->used_bytes(), (i + 1) * kChunk);
    }
    EXPECT_GE(FileSize((*storage)->fd()), 4 * kChunk);
    auto full = (*storage)->AllocateChunk();
    EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
    EXPECT_EQ((*storage)->used_bytes(), 4 * kChunk);
    EXPECT_EQ(CountEntries(storage_dir), 0);
  }
  EXPECT_EQ(CountEntries(storage_dir), 0);
}

TEST(DiffStorageTest, TempFileOnTmpfsFallsBackToBufferedIo) {
  struct stat st {};
  if (::stat("/dev/shm", &st) != 0 || !S_ISDIR(st.st_mode)) {
    GTEST_SKIP() << "no /dev/shm here";
  }
  auto storage = DiffStorage::Open({"/dev/shm", 2 * kChunk}, kChunk);
  ASSERT_TRUE(storage.ok()) << storage.status();
  EXPECT_EQ((*storage)->kind(), DiffStorage::Kind::kTempFile);
  ASSERT_TRUE((*storage)->AllocateChunk().ok());
}

TEST(DiffStorageTest, RegularFileIsGrownWithFallocateUpToTheLimit) {
  TempDir dir;
  const std::string path = dir.File("diff");
  testing::WriteFile(path, {});
  // 1 MiB chunks, a limit of 100 chunks: the first growth step is 64 MiB, the second stops at
  // the limit.
  constexpr uint64_t kBig = 1 * kMiB;
  auto storage = DiffStorage::Open({path, 100 * kBig}, kBig);
  ASSERT_TRUE(storage.ok()) << storage.status();
  EXPECT_EQ((*storage)->kind(), DiffStorage::Kind::kRegularFile);
  EXPECT_EQ((*storage)->allocated_bytes(), DiffStorage::kGrowStep);
  EXPECT_EQ(FileSize((*storage)->fd()), DiffStorage::kGrowStep);
  for (uint64_t i = 0; i < 64; ++i) ASSERT_TRUE((*storage)->AllocateChunk().ok());
  EXPECT_EQ(FileSize((*storage)->fd()), DiffStorage::kGrowStep);
  ASSERT_TRUE((*storage)->AllocateChunk().ok());
  EXPECT_EQ(FileSize((*storage)->fd()), 100 * kBig);
  for (uint64_t i = 65; i < 100; ++i) ASSERT_TRUE((*storage)->AllocateChunk().ok());
  auto full = (*storage)->AllocateChunk();
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  EXPECT_EQ(FileSize((*storage)->fd()), 100 * kBig);
  EXPECT_EQ((*storage)->used_bytes(), 100 * kBig);
}

TEST(DiffStorageTest, RegularFileLargerThanTheLimitIsUsedUpToTheLimitAndNotShrunk) {
  TempDir dir;
  const std::string path = dir.File("diff");
  testing::WriteFile(path, std::vector<uint8_t>(10 * kChunk, 0xaa));
  {
    auto storage = DiffStorage::Open({path, 2 * kChunk}, kChunk);
    ASSERT_TRUE(storage.ok()) << storage.status();
    ASSERT_TRUE((*storage)->AllocateChunk().ok());
    ASSERT_TRUE((*storage)->AllocateChunk().ok());
    EXPECT_EQ((*storage)->AllocateChunk().status().code(),
              absl::StatusCode::kResourceExhausted);
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 10 * kChunk);
}

TEST(DiffStorageTest, BlockDeviceIsUsedAsIsUpToTheLimit) {
  TempDir dir;
  const std::string backing = dir.File("backing");
  testing::WriteFile(backing, std::vector<uint8_t>(8 * kMiB, 0));
  LoopDevice loop(backing);
  if (!loop.ok()) GTEST_SKIP() << loop.reason();
  {
    auto storage = DiffStorage::Open({loop.device(), 1024 * kMiB}, kChunk);
    ASSERT_TRUE(storage.ok()) << storage.status();
    EXPECT_EQ((*storage)->kind(), DiffStorage::Kind::kBlockDevice);
    EXPECT_EQ((*storage)->limit_bytes(), 8 * kMiB) << "capacity = min(device size, limit)";
    EXPECT_EQ((*storage)->capacity_chunks(), 8 * kMiB / kChunk);
    // Opened exclusively: a second storage on the same device is refused.
    auto second = DiffStorage::Open({loop.device(), 1024 * kMiB}, kChunk);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
    EXPECT_NE(second.status().message().find("in use"), std::string::npos) << second.status();
    for (uint64_t i = 0; i < 8 * kMiB / kChunk; ++i) {
      ASSERT_TRUE((*storage)->AllocateChunk().ok()) << i;
    }
    EXPECT_EQ((*storage)->AllocateChunk().status().code(),
              absl::StatusCode::kResourceExhausted);
  }
  auto limited = DiffStorage::Open({loop.device(), 2 * kChunk}, kChunk);
  ASSERT_TRUE(limited.ok()) << limited.status();
  EXPECT_EQ((*limited)->limit_bytes(), 2 * kChunk);
  ASSERT_TRUE((*limited)->AllocateChunk().ok());
  ASSERT_TRUE((*limited)->AllocateChunk().ok());
  EXPECT_EQ((*limited)->AllocateChunk().status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(DiffStorageTest, BlockDeviceSmallerThanOneChunkIsRefused) {
  TempDir dir;
  const std::string backing = dir.File("backing");
  testing::WriteFile(backing, std::vector<uint8_t>(128 * kKiB, 0));
  LoopDevice loop(backing);
  if (!loop.ok()) GTEST_SKIP() << loop.reason();
  auto storage = DiffStorage::Open({loop.device(), 1024 * kMiB}, kChunk);
  EXPECT_EQ(storage.status().code(), absl::StatusCode::kFailedPrecondition) << storage.status();
  EXPECT_NE(storage.status().message().find("less than one chunk"), std::string::npos)
      << storage.status();
}

struct BadOptions {
  const char* name;
  std::string path;  // "@" = the temp dir
  uint64_t limit;
  uint64_t chunk;
  absl::StatusCode code;
  const char* message_part;
};

TEST(DiffStorageTest, RefusesBadOptionsWithClearMessages) {
  TempDir dir;
  const BadOptions cases[] = {
      {"empty path", "", 4 * kChunk, kChunk, absl::StatusCode::kInvalidArgument, "empty"},
      {"missing path", "@/nope/storage", 4 * kChunk, kChunk, absl::StatusCode::kNotFound,
       "does not exist"},
      {"limit 0", "@", 0, kChunk, absl::StatusCode::kInvalidArgument, "is 0"},
      {"unaligned limit", "@", 4 * kChunk + 512, kChunk, absl::StatusCode::kInvalidArgument,
       "not a multiple of 4096"},
      {"limit below a chunk", "@", 64 * kKiB, kChunk, absl::StatusCode::kInvalidArgument,
       "smaller than one chunk"},
      {"chunk not a power of two", "@", 4 * kChunk, 3 * 4096,
       absl::StatusCode::kInvalidArgument, "power of two"},
      {"chunk below 4096", "@", 4 * kChunk, 2048, absl::StatusCode::kInvalidArgument,
       "power of two"},
      {"character device", "/dev/null", 4 * kChunk, kChunk, absl::StatusCode::kInvalidArgument,
       "neither a directory, a regular file nor a block device"},
  };
  for (const BadOptions& c : cases) {
    std::string path = c.path;
    if (!path.empty() && path[0] == '@') path = dir.path() + path.substr(1);
    auto storage = DiffStorage::Open({path, c.limit}, c.chunk);
    EXPECT_EQ(storage.status().code(), c.code) << c.name << ": " << storage.status();
    EXPECT_NE(storage.status().message().find(c.message_part), std::string::npos)
        << c.name << ": " << storage.status();
    if (!path.empty() && c.code != absl::StatusCode::kNotFound) {
      EXPECT_NE(storage.status().message().find(path), std::string::npos)
          << c.name << ": the message names the path: " << storage.status();
    }
  }
  EXPECT_EQ(CountEntries(dir.path()), 0) << "refusals leave nothing behind";
}

TEST(DiffStorageTest, UnwritableDirectoryIsPermissionDenied) {
  if (::geteuid() == 0) GTEST_SKIP() << "root bypasses directory permissions";
  TempDir dir;
  const std::string ro = dir.Subdir("ro");
  ASSERT_EQ(::chmod(ro.c_str(), 0500), 0);
  auto storage = DiffStorage::Open({ro, 4 * kChunk}, kChunk);
  EXPECT_EQ(storage.status().code(), absl::StatusCode::kPermissionDenied) << storage.status();
}

}  // namespace
}  // namespace cbt::ublk
