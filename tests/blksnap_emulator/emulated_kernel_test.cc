// Byte-exactness tests of the EmulatedKernel, driven only through raw Ioctl calls with uapi.h
// structs, for each flavour: the errno map of blksnap-real-module.md §3–4 and blksnap.md §1,
// the module sources' copy/optlen rules, storage kinds, events and overflow.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/blksnap_emulator/emulated_kernel.h"
#include "tests/blksnap_emulator/test_util.h"

namespace cbt::blksnap::emulator {
namespace {

using testing::Driver;
using testing::ImagePath;
using testing::kMiB;
using testing::Pattern;
using testing::TempDir;

constexpr char kDev[] = "/dev/loop0";
constexpr char kDev2[] = "/dev/loop1";
constexpr uint64_t kGiBSectors = 2097152;

class EmulatorTest : public ::testing::TestWithParam<Flavour> {
 protected:
  void SetUp() override {
    EmulatorOptions options;
    options.flavour = GetParam();
    options.kernel_release = "6.1.0-50-amd64";
    options.backing_dir = temp_.Subdir("backing");
    kernel_ = std::make_unique<EmulatedKernel>(options);
    ASSERT_TRUE(kernel_->AddDevice(kDev, 64 * kMiB, 7, 0).ok());
    ASSERT_TRUE(kernel_->AddDevice(kDev2, 32 * kMiB, 7, 1).ok());
    driver_ = std::make_unique<Driver>(kernel_.get(), GetParam());
    storage_ = temp_.Subdir("storage");
  }

  void TearDown() override {
    driver_.reset();
    kernel_.reset();
  }

  Flavour flavour() const { return GetParam(); }
  bool upstream() const { return GetParam() != Flavour::kVal7; }

  // attach + create (directory storage) + add + take.
  blksnap_uuid TakeSnapshot(const std::string& device = kDev, uint64_t limit = kGiBSectors) {
    blksnap_uuid id{};
    int error = driver_->Attach(device);
    EXPECT_TRUE(error == 0 || error == EALREADY) << error;
    EXPECT_EQ(driver_->Create(storage_, limit, &id), 0);
    EXPECT_EQ(driver_->SnapshotAdd(device, id), 0);
    EXPECT_EQ(driver_->Take(id), 0);
    return id;
  }

  TempDir temp_;
  std::unique_ptr<EmulatedKernel> kernel_;
  std::unique_ptr<Driver> driver_;
  std::string storage_;
};

std::string ParamName(const ::testing::TestParamInfo<Flavour>& info) {
  return testing::FlavourTestName(info.param);
}

INSTANTIATE_TEST_SUITE_P(AllFlavours, EmulatorTest,
                         ::testing::Values(Flavour::kLk615, Flavour::kV7, Flavour::kVal7),
                         ParamName);

TEST_P(EmulatorTest, DeviceNodesPerFlavour) {
  FileStatus status;
  EXPECT_EQ(kernel_->Stat(kUpstreamControlDevice, &status), upstream() ? 0 : ENOENT);
  EXPECT_EQ(kernel_->Stat(kVal7ControlDevice, &status), upstream() ? ENOENT : 0);
  EXPECT_EQ(kernel_->Stat(kVal7FilterDevice, &status), upstream() ? ENOENT : 0);
  ASSERT_EQ(kernel_->Stat(testing::ControlPath(flavour()), &status), 0);
  EXPECT_FALSE(status.is_block_device);
  EXPECT_EQ(status.rdev_major, 10u);

  ASSERT_EQ(kernel_->Stat(kDev, &status), 0);
  EXPECT_TRUE(status.is_block_device);
  EXPECT_EQ(status.rdev_major, 7u);
  EXPECT_EQ(status.rdev_minor, 0u);

  ASSERT_TRUE(kernel_->AddSymlink("/dev/disk/by-id/disk-a", "../../loop0").ok());
  std::string resolved;
  ASSERT_EQ(kernel_->RealPath("/dev/disk/by-id/disk-a", &resolved), 0);
  EXPECT_EQ(resolved, kDev);
  ASSERT_EQ(kernel_->Stat("/dev/disk/by-id/disk-a", &status), 0);
  EXPECT_TRUE(status.is_block_device);
  EXPECT_EQ(status.rdev_minor, 0u);

  // Everything else is the real file system.
  ASSERT_EQ(kernel_->Stat(storage_, &status), 0);
  EXPECT_TRUE(status.is_directory);
  EXPECT_EQ(kernel_->Stat(temp_.path() + "/missing", &status), ENOENT);
  // Host device nodes never show through.
  EXPECT_EQ(kernel_->Stat("/dev/null", &status), ENOENT);
  EXPECT_EQ(kernel_->RealPath("/dev/null", &resolved), ENOENT);
  ASSERT_EQ(kernel_->RealPath(storage_ + "/../storage", &resolved), 0);
  char real[PATH_MAX];
  ASSERT_NE(::realpath(storage_.c_str(), real), nullptr);
  EXPECT_EQ(resolved, real);

  std::string release;
  ASSERT_EQ(kernel_->KernelRelease(&release), 0);
  EXPECT_EQ(release, "6.1.0-50-amd64");

  int fd = -1;
  EXPECT_EQ(kernel_->Open("/dev/nonexistent-device", O_RDONLY, &fd), ENOENT);
  EXPECT_EQ(kernel_->Close(12345), EBADF);
}

TEST_P(EmulatorTest, VersionPerFlavour) {
  blksnap_version version{1, 1, 1, 1};
  ASSERT_EQ(driver_->Version(&version), 0);
  EXPECT_EQ(version.major, upstream() ? 2 : 7);
  EXPECT_EQ(version.minor, 0);
  EXPECT_EQ(version.revision, 0);
  EXPECT_EQ(version.build, 0);
  EXPECT_EQ(driver_->RawControl(kIoctlVersion, nullptr), ENODATA);
}

TEST_P(EmulatorTest, BlkGetSize64) {
  uint64_t size = 0;
  ASSERT_EQ(driver_->BlockSize64(kDev, &size), 0);
  EXPECT_EQ(size, 64 * kMiB);
  ASSERT_TRUE(kernel_->ResizeDevice(kDev, 96 * kMiB).ok());
  ASSERT_EQ(driver_->BlockSize64(kDev, &size), 0);
  EXPECT_EQ(size, 96 * kMiB);
  int fd = -1;
  ASSERT_EQ(kernel_->Open(kDev, O_RDONLY, &fd), 0);
  EXPECT_EQ(kernel_->Ioctl(fd, kBlkGetSize64, nullptr), EFAULT);
  // A regular file is not a block device.
  ASSERT_EQ(kernel_->Open(storage_, O_RDONLY, &fd), 0);
  EXPECT_EQ(kernel_->Ioctl(fd, kBlkGetSize64, &size), ENOTTY);
}

TEST_P(EmulatorTest, AttachDetachAndCtlErrnos) {
  blksnap_cbtinfo info{};
  // Not attached: ctl and detach answer ENOENT.
  EXPECT_EQ(driver_->CbtInfo(kDev, &info), ENOENT);
  EXPECT_EQ(driver_->Detach(kDev), ENOENT);
  // Unknown filter name.
  EXPECT_EQ(driver_->Attach(kDev, "blksnap2"), ENOENT);
  EXPECT_EQ(driver_->Attach(kDev, "blksna"), ENOENT);

  ASSERT_EQ(driver_->Attach(kDev), 0);
  EXPECT_EQ(driver_->Attach(kDev), EALREADY);
  EXPECT_EQ(driver_->CbtInfo(kDev, &info), 0);
  // A ctl with another filter's name: EINVAL in the block layer, ENOENT in bdevfilter.
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtInfo, &info, sizeof(info), "other"),
            upstream() ? EINVAL : ENOENT);
  EXPECT_EQ(driver_->Detach(kDev, "other"), EINVAL);

  ASSERT_EQ(driver_->Detach(kDev), 0);
  EXPECT_EQ(driver_->Detach(kDev), ENOENT);
  EXPECT_EQ(driver_->CbtInfo(kDev, &info), ENOENT);

  // Failed copies of the filter structs: EFAULT (block layer and bdevfilter alike).
  const int fd = driver_->FilterFd(kDev);
  ASSERT_GE(fd, 0);
  if (flavour() == Flavour::kLk615) {
    EXPECT_EQ(kernel_->Ioctl(fd, kLk615BlkfilterAttach, nullptr), EFAULT);
    EXPECT_EQ(kernel_->Ioctl(fd, kLk615BlkfilterDetach, nullptr), EFAULT);
    EXPECT_EQ(kernel_->Ioctl(fd, kLk615BlkfilterCtl, nullptr), EFAULT);
  } else if (flavour() == Flavour::kV7) {
    EXPECT_EQ(kernel_->Ioctl(fd, kV7BlkfilterAttach, nullptr), EFAULT);
    EXPECT_EQ(kernel_->Ioctl(fd, kV7BlkfilterDetach, nullptr), EFAULT);
    EXPECT_EQ(kernel_->Ioctl(fd, kV7BlkfilterCtl, nullptr), EFAULT);
  } else {
    EXPECT_EQ(kernel_->Ioctl(fd, kVal7BdevfilterAttach, nullptr), EFAULT);
    EXPECT_EQ(kernel_->Ioctl(fd, kVal7BdevfilterCtl, nullptr), EFAULT);
    // A NULL devpath is a failed strndup_user; a path that is not a block device: ENOTBLK.
    bdevfilter_name name{};
    std::memcpy(name.name, "blksnap", 7);
    EXPECT_EQ(kernel_->Ioctl(fd, kVal7BdevfilterAttach, &name), EFAULT);
    const std::string not_a_device = storage_;
    name.devpath = reinterpret_cast<uintptr_t>(not_a_device.c_str());
    EXPECT_EQ(kernel_->Ioctl(fd, kVal7BdevfilterAttach, &name), ENOTBLK);
    const std::string missing = "/dev/missing";
    name.devpath = reinterpret_cast<uintptr_t>(missing.c_str());
    EXPECT_EQ(kernel_->Ioctl(fd, kVal7BdevfilterAttach, &name), ENOENT);
  }
}

TEST_P(EmulatorTest, FilterIoctlsLiveWhereTheFlavourPutsThem) {
  int device_fd = -1;
  ASSERT_EQ(kernel_->Open(kDev, O_RDONLY, &device_fd), 0);
  blkfilter_attach attach{};
  std::memcpy(attach.name, "blksnap", 7);
  blkfilter_name name{};
  std::memcpy(name.name, "blksnap", 7);
  if (flavour() == Flavour::kVal7) {
    // VAL-7.0 has no filter ioctls on block devices at all.
    EXPECT_EQ(kernel_->Ioctl(device_fd, kLk615BlkfilterAttach, &attach), ENOTTY);
    EXPECT_EQ(kernel_->Ioctl(device_fd, kV7BlkfilterAttach, &name), ENOTTY);
    EXPECT_EQ(kernel_->Ioctl(device_fd, kV7BlkfilterCtl, &attach), ENOTTY);
  } else {
    // The bdevfilter misc device does not exist.
    int fd = -1;
    EXPECT_EQ(kernel_->Open(kVal7FilterDevice, O_RDWR, &fd), ENOENT);
  }
  // Filter numbers on the control device are unknown there.
  EXPECT_EQ(driver_->RawControl(kLk615BlkfilterCtl, &attach), ENOTTY);
  EXPECT_EQ(driver_->RawControl(kVal7BdevfilterAttach, &attach), ENOTTY);
  // VAL-7.0's modification ioctls exist only there.
  uint8_t mod[40] = {};
  EXPECT_EQ(driver_->RawControl(0x80285620, mod), upstream() ? ENOTTY : 0);
  if (!upstream()) {
    EXPECT_EQ(mod[0], 0x2);
    EXPECT_STREQ(reinterpret_cast<const char*>(mod + 8), "standalone");
  }
}

TEST_P(EmulatorTest, UnknownCtlCommandIsEnotty) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  uint8_t buffer[64] = {};
  EXPECT_EQ(driver_->Ctl(kDev, 5, buffer, sizeof(buffer)), ENOTTY);
  EXPECT_EQ(driver_->Ctl(kDev, 0xFFFFFFFF, buffer, sizeof(buffer)), ENOTTY);
}

TEST_P(EmulatorTest, OptlenSmallerThanTheStructIsEinval) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  uint8_t buffer[64] = {};
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtInfo, buffer, 33), EINVAL);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtInfo, buffer, 39), EINVAL);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtInfo, buffer, 40), 0);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtMap, buffer, 15), EINVAL);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtDirty, buffer, 15), EINVAL);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlSnapshotAdd, buffer, 15), EINVAL);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlSnapshotInfo, buffer, 35), EINVAL);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlSnapshotInfo, buffer, 36), 0);
}

TEST_P(EmulatorTest, FailedUserCopiesAreEnodata) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtInfo, nullptr, 40), ENODATA);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtMap, nullptr, 16), ENODATA);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtDirty, nullptr, 16), ENODATA);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlSnapshotAdd, nullptr, 16), ENODATA);
  EXPECT_EQ(driver_->Ctl(kDev, kCtlSnapshotInfo, nullptr, 36), ENODATA);
  // CBTDIRTY with an unreadable range array.
  blksnap_cbtdirty dirty{};
  dirty.count = 1;
  EXPECT_EQ(driver_->Ctl(kDev, kCtlCbtDirty, &dirty, sizeof(dirty)), ENODATA);
  // CBTMAP into an unwritable buffer: copy_to_user failure there is EINVAL.
  EXPECT_EQ(driver_->CbtMap(kDev, 0, 16, nullptr), EINVAL);
  EXPECT_EQ(driver_->CbtMap(kDev, 0, 0, nullptr), 0);

  EXPECT_EQ(driver_->RawControl(kIoctlSnapshotCreate, nullptr), ENODATA);
  EXPECT_EQ(driver_->RawControl(kIoctlSnapshotDestroy, nullptr), ENODATA);
  EXPECT_EQ(driver_->RawControl(kIoctlSnapshotTake, nullptr), ENODATA);
  EXPECT_EQ(driver_->RawControl(kIoctlSnapshotCollect, nullptr), ENODATA);
  // WAIT_EVENT's copy failures are EINVAL.
  EXPECT_EQ(driver_->RawControl(kIoctlSnapshotWaitEvent, nullptr), EINVAL);
}

TEST_P(EmulatorTest, CbtInfoRightAfterAttach) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  blksnap_cbtinfo info;
  std::memset(&info, 0xAB, sizeof(info));
  ASSERT_EQ(driver_->CbtInfo(kDev, &info), 0);
  EXPECT_EQ(info.device_capacity, 67108864u);
  EXPECT_EQ(info.block_size, 65536u);
  EXPECT_EQ(info.block_count, 1024u);
  EXPECT_FALSE(testing::UuidIsNil(info.generation_id));
  EXPECT_EQ(info.changes_number, 0);
  const uint8_t* raw = reinterpret_cast<const uint8_t*>(&info);
  for (size_t i = 33; i < sizeof(info); ++i) EXPECT_EQ(raw[i], 0) << "padding byte " << i;
  std::vector<uint8_t> map;
  ASSERT_EQ(driver_->CbtMapAll(kDev, &map), 0);
  EXPECT_EQ(map, std::vector<uint8_t>(1024, 0));
}

TEST_P(EmulatorTest, CbtMapRangeBeyondTheMapIsEnodata) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  std::vector<uint8_t> buffer(2048, 0xEE);
  EXPECT_EQ(driver_->CbtMap(kDev, 0, 1024, buffer.data()), 0);
  EXPECT_EQ(driver_->CbtMap(kDev, 0, 1025, buffer.data()), ENODATA);
  EXPECT_EQ(driver_->CbtMap(kDev, 1, 1024, buffer.data()), ENODATA);
  EXPECT_EQ(driver_->CbtMap(kDev, 1000, 24, buffer.data()), 0);
  EXPECT_EQ(driver_->CbtMap(kDev, 1024, 0, buffer.data()), 0);
  EXPECT_EQ(driver_->CbtMap(kDev, 1025, 0, buffer.data()), ENODATA);
  // Only `length` bytes are written.
  std::fill(buffer.begin(), buffer.end(), 0xEE);
  ASSERT_EQ(driver_->CbtMap(kDev, 10, 5, buffer.data()), 0);
  EXPECT_EQ(buffer[4], 0);
  EXPECT_EQ(buffer[5], 0xEE);
}

TEST_P(EmulatorTest, CorruptedCbtIsEfaultUntilTheNextTakeResetsIt) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  blksnap_cbtinfo before{};
  ASSERT_EQ(driver_->CbtInfo(kDev, &before), 0);
  // Grow the device and write past the old end: the map is marked corrupted.
  ASSERT_TRUE(kernel_->ResizeDevice(kDev, 128 * kMiB).ok());
  ASSERT_TRUE(kernel_->WriteDevice(kDev, 100 * kMiB, "x").ok());
  std::vector<uint8_t> map(1024);
  EXPECT_EQ(driver_->CbtMap(kDev, 0, 1024, map.data()), EFAULT);
  EXPECT_EQ(driver_->CbtMap(kDev, 0, 1024, nullptr), EFAULT);  // checked before anything else
  EXPECT_EQ(driver_->CbtDirty(kDev, {{0, 1}}), EINVAL);
  blksnap_cbtinfo info{};
  ASSERT_EQ(driver_->CbtInfo(kDev, &info), 0);
  EXPECT_EQ(info.device_capacity, 64 * kMiB);  // still the old map

  const blksnap_uuid id = TakeSnapshot();
  ASSERT_EQ(driver_->CbtInfo(kDev, &info), 0);
  EXPECT_EQ(info.device_capacity, 128 * kMiB);
  EXPECT_EQ(info.block_count, 2048u);
  EXPECT_EQ(info.changes_number, 1);
  EXPECT_NE(testing::UuidText(info.generation_id), testing::UuidText(before.generation_id));
  map.resize(2048);
  EXPECT_EQ(driver_->CbtMap(kDev, 0, 2048, map.data()), 0);
  EXPECT_EQ(driver_->Destroy(id), 0);
}

TEST_P(EmulatorTest, CbtDirtyOutOfRangeFailsAfterApplyingEarlierEntries) {
  const blksnap_uuid id = TakeSnapshot();
  std::vector<uint8_t> map;
  // Block 500 whole, one sector inside block 600, then a range past the end.
  EXPECT_EQ(driver_->CbtDirty(kDev, {{500 * 128, 128}, {600 * 128 + 5, 1}, {1024 * 128, 1}}),
            EINVAL);
  ASSERT_EQ(driver_->CbtMapAll(kDev, &map), 0);  // not corrupted
  EXPECT_EQ(map[500], 1);
  EXPECT_EQ(map[600], 1);
  EXPECT_EQ(map[499], 0);
  EXPECT_EQ(map[501], 0);
  blksnap_cbtinfo info{};
  EXPECT_EQ(driver_->CbtInfo(kDev, &info), 0);
  // Zero-count ranges follow the kernel's wrapping block arithmetic: at a block boundary
  // nothing is marked.
  EXPECT_EQ(driver_->CbtDirty(kDev, {{700 * 128, 0}}), 0);
  ASSERT_EQ(driver_->CbtMapAll(kDev, &map), 0);
  EXPECT_EQ(map[700], 0);
  EXPECT_EQ(map[699], 0);
  EXPECT_EQ(driver_->Destroy(id), 0);
  // The dirty marks also count as changes for the next snapshot (write map).
  const blksnap_uuid id2 = TakeSnapshot();
  ASSERT_EQ(driver_->CbtMapAll(kDev, &map), 0);
  EXPECT_EQ(map[500], 2);
  EXPECT_EQ(map[600], 2);
  EXPECT_EQ(driver_->Destroy(id2), 0);
}

TEST_P(EmulatorTest, SnapshotAddErrnos) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  blksnap_uuid unknown{};
  unknown.b[0] = 0x42;
  EXPECT_EQ(driver_->SnapshotAdd(kDev, unknown), ESRCH);
  blksnap_uuid first{}, second{};
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &first), 0);
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &second), 0);
  EXPECT_FALSE(testing::UuidIsNil(first));
  EXPECT_NE(testing::UuidText(first), testing::UuidText(second));
  EXPECT_EQ(driver_->SnapshotAdd(kDev, first), 0);
  EXPECT_EQ(driver_->SnapshotAdd(kDev, first), EALREADY);
  EXPECT_EQ(driver_->SnapshotAdd(kDev, second), EBUSY);
  ASSERT_EQ(driver_->Destroy(first), 0);
  EXPECT_EQ(driver_->SnapshotAdd(kDev, second), 0);
  EXPECT_EQ(driver_->Destroy(second), 0);
}

TEST_P(EmulatorTest, DeviceHoldingTheDiffStorageIsSilentlyNotAdded) {
  // A directory that "lives" on /dev/loop0.
  const std::string mounted = temp_.Subdir("mnt-loop0");
  ASSERT_TRUE(kernel_->AddMount(mounted, kDev).ok());
  FileStatus status;
  ASSERT_EQ(kernel_->Stat(mounted, &status), 0);
  EXPECT_EQ(status.dev_major, 7u);
  EXPECT_EQ(status.dev_minor, 0u);
  ASSERT_EQ(kernel_->Stat(temp_.Subdir("mnt-loop0/sub"), &status), 0);
  EXPECT_EQ(status.dev_minor, 0u);

  ASSERT_EQ(driver_->Attach(kDev), 0);
  blksnap_uuid id{};
  ASSERT_EQ(driver_->Create(mounted, kGiBSectors, &id), 0);
  EXPECT_EQ(driver_->SnapshotAdd(kDev, id), 0);  // logged by the kernel, not added
  EXPECT_EQ(driver_->Take(id), ENODEV);         // no devices in the snapshot
  EXPECT_EQ(driver_->Destroy(id), 0);

  // Block-device diff storage: the same rule for the storage device itself.
  ASSERT_EQ(driver_->Attach(kDev2), 0);
  ASSERT_EQ(driver_->Create(kDev2, 32 * 2048, &id), 0);
  EXPECT_EQ(driver_->SnapshotAdd(kDev2, id), 0);
  EXPECT_EQ(driver_->Take(id), ENODEV);
  EXPECT_EQ(driver_->SnapshotAdd(kDev, id), 0);
  EXPECT_EQ(driver_->Take(id), 0);
  EXPECT_EQ(driver_->Destroy(id), 0);
}

TEST_P(EmulatorTest, TakeAndDestroyErrnos) {
  blksnap_uuid unknown{};
  unknown.b[15] = 7;
  EXPECT_EQ(driver_->Take(unknown), ESRCH);
  EXPECT_EQ(driver_->Destroy(unknown), ENODEV);
  ASSERT_EQ(driver_->Attach(kDev), 0);
  blksnap_uuid id{};
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &id), 0);
  EXPECT_EQ(driver_->Take(id), ENODEV);
  ASSERT_EQ(driver_->SnapshotAdd(kDev, id), 0);
  EXPECT_EQ(driver_->Take(id), 0);
  EXPECT_EQ(driver_->Take(id), EALREADY);
  EXPECT_EQ(driver_->Destroy(id), 0);
  EXPECT_EQ(driver_->Destroy(id), ENODEV);
  EXPECT_EQ(driver_->Take(id), ESRCH);
}

TEST_P(EmulatorTest, WaitEventTimesOutInJiffiesAndKnowsOnlyLiveSnapshots) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  blksnap_uuid id{};
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &id), 0);
  blksnap_snapshot_event event;
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(driver_->WaitEvent(id, 0, &event), ENOENT);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(80));
  start = std::chrono::steady_clock::now();
  EXPECT_EQ(driver_->WaitEvent(id, 25, &event), ENOENT);  // 25 jiffies = 100 ms at HZ=250
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, std::chrono::milliseconds(95));
  EXPECT_LT(elapsed, std::chrono::milliseconds(kMaxWaitEventMs + 1000));
  start = std::chrono::steady_clock::now();
  EXPECT_EQ(driver_->WaitEvent(id, 100000, &event), ENOENT);  // capped
  elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, std::chrono::milliseconds(kMaxWaitEventMs - 5));
  EXPECT_LT(elapsed, std::chrono::milliseconds(kMaxWaitEventMs + 1000));  // not 400 s

  blksnap_uuid unknown{};
  unknown.b[3] = 3;
  EXPECT_EQ(driver_->WaitEvent(unknown, 1, &event), ESRCH);
  ASSERT_EQ(driver_->Destroy(id), 0);
  EXPECT_EQ(driver_->WaitEvent(id, 1, &event), ESRCH);
}

TEST_P(EmulatorTest, WaitEventDoesNotBlockOtherCalls) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  blksnap_uuid id{};
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &id), 0);
  std::atomic<bool> waiter_done{false};
  std::thread waiter([&] {
    Driver other(kernel_.get(), flavour());
    blksnap_snapshot_event event;
    EXPECT_EQ(other.WaitEvent(id, 1000, &event), ENOENT);
    waiter_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  blksnap_cbtinfo info{};
  EXPECT_EQ(driver_->CbtInfo(kDev, &info), 0);
  EXPECT_EQ(driver_->SnapshotAdd(kDev, id), 0);
  // Had these calls waited for the mutex, the waiter would be done by now.
  EXPECT_FALSE(waiter_done);
  waiter.join();
  EXPECT_EQ(driver_->Destroy(id), 0);
}

TEST_P(EmulatorTest, Collect) {
  std::vector<blksnap_uuid> ids;
  uint32_t count = 99;
  EXPECT_EQ(driver_->Collect(0, false, &ids, &count), 0);
  EXPECT_EQ(count, 0u);
  EXPECT_EQ(driver_->Collect(4, true, &ids, &count), 0);
  EXPECT_EQ(count, 0u);

  blksnap_uuid first{}, second{};
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &first), 0);
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &second), 0);
  EXPECT_EQ(driver_->Collect(0, false, &ids, &count), 0);
  EXPECT_EQ(count, 2u);
  // Too small: ENODATA with count = entries filled (not the number needed).
  EXPECT_EQ(driver_->Collect(1, true, &ids, &count), ENODATA);
  EXPECT_EQ(count, 1u);
  EXPECT_EQ(testing::UuidText(ids[0]), testing::UuidText(first));
  EXPECT_EQ(driver_->Collect(5, true, &ids, &count), 0);
  ASSERT_EQ(count, 2u);
  EXPECT_EQ(testing::UuidText(ids[0]), testing::UuidText(first));
  EXPECT_EQ(testing::UuidText(ids[1]), testing::UuidText(second));
  EXPECT_TRUE(testing::UuidIsNil(ids[2]));
  ASSERT_EQ(driver_->Destroy(first), 0);
  EXPECT_EQ(driver_->Collect(5, true, &ids, &count), 0);
  ASSERT_EQ(count, 1u);
  EXPECT_EQ(testing::UuidText(ids[0]), testing::UuidText(second));
  ASSERT_EQ(driver_->Destroy(second), 0);
}

TEST_P(EmulatorTest, CreateWithEachKindOfDiffStorage) {
  blksnap_uuid id{};
  // Directory: an unnamed O_TMPFILE, nothing visible in the directory.
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &id), 0);
  EXPECT_EQ(::rmdir(storage_.c_str()), 0) << "the directory must stay empty";
  ASSERT_EQ(::mkdir(storage_.c_str(), 0700), 0);
  ASSERT_EQ(driver_->Destroy(id), 0);

  // Regular file: grown to min(limit, 1 GiB) at create (32 MiB limit -> 33554432 bytes).
  const std::string file = temp_.path() + "/diff-storage";
  ::close(::open(file.c_str(), O_CREAT | O_WRONLY, 0600));
  ASSERT_EQ(driver_->Create(file, 32 * 2048, &id), 0);
  struct stat st;
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 33554432);
  ASSERT_EQ(driver_->Destroy(id), 0);
  // A small file already larger than the limit: ENOSPC.
  ASSERT_EQ(::truncate(file.c_str(), 40 * kMiB), 0);
  EXPECT_EQ(driver_->Create(file, 32 * 2048, &id), ENOSPC);

  // Emulated block device: used as is, exclusively.
  ASSERT_EQ(driver_->Create(kDev2, 32 * 2048, &id), 0);
  blksnap_uuid other{};
  EXPECT_EQ(driver_->Create(kDev2, 32 * 2048, &other), EBUSY);
  int fd = -1;
  EXPECT_EQ(kernel_->Open(kDev2, O_RDWR | O_EXCL, &fd), EBUSY);
  ASSERT_EQ(driver_->Destroy(id), 0);
  ASSERT_EQ(driver_->Create(kDev2, 32 * 2048, &id), 0);
  ASSERT_EQ(driver_->Destroy(id), 0);

  // Errors.
  EXPECT_EQ(driver_->Create(temp_.path() + "/missing", kGiBSectors, &id), ENOENT);
  EXPECT_EQ(driver_->Create("", kGiBSectors, &id), ENOENT);
  EXPECT_EQ(driver_->Create(testing::ControlPath(flavour()), kGiBSectors, &id), EINVAL);
  std::string too_long(5000, 'a');
  EXPECT_EQ(driver_->Create(too_long, kGiBSectors, &id), EINVAL);

  // A NULL file name: a failed strndup_user upstream; VAL-7.0 (BLKSNAP_MODIFICATION) creates
  // a snapshot without storage and asks for some with a low_free_space event.
  blksnap_snapshot_create create{};
  create.diff_storage_limit_sect = 8192;
  const int error = driver_->RawControl(kIoctlSnapshotCreate, &create);
  if (upstream()) {
    EXPECT_EQ(error, EFAULT);
  } else {
    ASSERT_EQ(error, 0);
    blksnap_snapshot_event event;
    ASSERT_EQ(driver_->WaitEvent(create.id, 0, &event), 0);
    EXPECT_EQ(event.code, kEventLowFreeSpace);
    blksnap_event_no_space data;
    std::memcpy(&data, event.data, sizeof(data));
    EXPECT_EQ(data.requested_nr_sect, 8192u);
    EXPECT_EQ(driver_->Destroy(create.id), 0);
  }
}

TEST_P(EmulatorTest, SnapshotInfoAndImageNodes) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  blksnap_uuid id{};
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &id), 0);
  ASSERT_EQ(driver_->SnapshotAdd(kDev, id), 0);
  blksnap_snapshotinfo info{};
  info.error_code = 77;
  ASSERT_EQ(driver_->SnapshotInfo(kDev, &info), 0);
  EXPECT_EQ(info.error_code, 0);
  EXPECT_STREQ(reinterpret_cast<const char*>(info.image), "");
  const std::string image = ImagePath(flavour(), 7, 0);
  FileStatus status;
  EXPECT_EQ(kernel_->Stat(image, &status), ENOENT);

  ASSERT_EQ(driver_->Take(id), 0);
  std::memset(&info, 0, sizeof(info));
  ASSERT_EQ(driver_->SnapshotInfo(kDev, &info), 0);
  EXPECT_EQ(info.error_code, 0);
  EXPECT_EQ("/dev/" + std::string(reinterpret_cast<const char*>(info.image)), image);
  ASSERT_EQ(kernel_->Stat(image, &status), 0);
  EXPECT_TRUE(status.is_block_device);
  EXPECT_EQ(status.rdev_major, 259u);
  uint64_t size = 0;
  ASSERT_EQ(driver_->BlockSize64(image, &size), 0);
  EXPECT_EQ(size, 64 * kMiB);
  std::string resolved;
  ASSERT_EQ(kernel_->RealPath(image, &resolved), 0);
  EXPECT_EQ(resolved, image);

  ASSERT_EQ(driver_->Destroy(id), 0);
  EXPECT_EQ(kernel_->Stat(image, &status), ENOENT);
  std::memset(&info, 0, sizeof(info));
  ASSERT_EQ(driver_->SnapshotInfo(kDev, &info), 0);
  EXPECT_STREQ(reinterpret_cast<const char*>(info.image), "");
  // The CBT survives the destroy.
  blksnap_cbtinfo cbt{};
  ASSERT_EQ(driver_->CbtInfo(kDev, &cbt), 0);
  EXPECT_EQ(cbt.changes_number, 1);
}

TEST_P(EmulatorTest, DetachDiscardsTheCbt) {
  const blksnap_uuid id = TakeSnapshot();
  blksnap_cbtinfo before{};
  ASSERT_EQ(driver_->CbtInfo(kDev, &before), 0);
  EXPECT_EQ(before.changes_number, 1);
  ASSERT_EQ(driver_->Destroy(id), 0);
  ASSERT_EQ(driver_->Detach(kDev), 0);
  ASSERT_EQ(driver_->Attach(kDev), 0);
  blksnap_cbtinfo after{};
  ASSERT_EQ(driver_->CbtInfo(kDev, &after), 0);
  EXPECT_EQ(after.changes_number, 0);
  EXPECT_NE(testing::UuidText(after.generation_id), testing::UuidText(before.generation_id));
}

TEST_P(EmulatorTest, ImageWritesAreCopiedOnWriteAndMarkBothMaps) {
  const std::string old_data = Pattern(512 * 1024, 1);
  ASSERT_TRUE(kernel_->WriteDevice(kDev, 4 * kMiB, old_data).ok());
  const blksnap_uuid id = TakeSnapshot();
  const std::string image = ImagePath(flavour(), 7, 0);
  // Unaligned write straddling a chunk border (chunks are 256 KiB).
  const std::string written = Pattern(3000, 2);
  const uint64_t offset = 4 * kMiB + 256 * 1024 - 1000;
  ASSERT_TRUE(kernel_->WriteDevice(image, offset, written).ok());
  auto image_data = kernel_->ReadDevice(image, 4 * kMiB, old_data.size());
  ASSERT_TRUE(image_data.ok());
  std::string expected = old_data;
  expected.replace(offset - 4 * kMiB, written.size(), written);
  EXPECT_TRUE(*image_data == expected);
  auto origin = kernel_->ReadDevice(kDev, 4 * kMiB, old_data.size());
  ASSERT_TRUE(origin.ok());
  EXPECT_TRUE(*origin == old_data);
  // Image writes show up in the map being read now (changes number 1) ...
  std::vector<uint8_t> map;
  ASSERT_EQ(driver_->CbtMapAll(kDev, &map), 0);
  EXPECT_EQ(map[67], 1);  // 4 MiB + 256 KiB - 1000 lies in block 67
  EXPECT_EQ(map[68], 1);
  EXPECT_EQ(map[66], 0);
  // ... and an origin write afterwards does not disturb the image copy.
  ASSERT_TRUE(kernel_->WriteDevice(kDev, 4 * kMiB, Pattern(512 * 1024, 3)).ok());
  image_data = kernel_->ReadDevice(image, 4 * kMiB, old_data.size());
  ASSERT_TRUE(image_data.ok());
  EXPECT_TRUE(*image_data == expected);
  ASSERT_EQ(driver_->Destroy(id), 0);
  EXPECT_EQ(kernel_->ReadDevice(image, 0, 512).status().code(), absl::StatusCode::kNotFound);
}

TEST_P(EmulatorTest, OverflowCorruptsTheSnapshotButNotTheOrigin) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  const std::string before = Pattern(3 * kMiB, 4);
  ASSERT_TRUE(kernel_->WriteDevice(kDev, 0, before).ok());
  blksnap_uuid id{};
  // 4 MiB limit: 2 MiB reserved, 2 MiB = 8 chunks usable.
  ASSERT_EQ(driver_->Create(storage_, 8192, &id), 0);
  ASSERT_EQ(driver_->SnapshotAdd(kDev, id), 0);
  ASSERT_EQ(driver_->Take(id), 0);
  const std::string image = ImagePath(flavour(), 7, 0);
  const int64_t start = [] {
    struct timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  }();
  // 2 MiB fit ...
  ASSERT_TRUE(kernel_->WriteDevice(kDev, 0, Pattern(2 * kMiB, 5)).ok());
  auto image_data = kernel_->ReadDevice(image, 0, 2 * kMiB);
  ASSERT_TRUE(image_data.ok());
  EXPECT_TRUE(*image_data == before.substr(0, 2 * kMiB));
  blksnap_snapshotinfo info{};
  ASSERT_EQ(driver_->SnapshotInfo(kDev, &info), 0);
  EXPECT_EQ(info.error_code, 0);
  // ... the ninth chunk does not.
  const std::string after = Pattern(3 * kMiB, 6);
  ASSERT_TRUE(kernel_->WriteDevice(kDev, 0, after).ok());

  blksnap_snapshot_event event;
  if (flavour() == Flavour::kLk615) {
    // lk6.15 reports that the limit was reached (at the first allocation already, because
    // less than half of diff_storage_minimum is left), with the requested size.
    ASSERT_EQ(driver_->WaitEvent(id, 0, &event), 0);
    EXPECT_EQ(event.code, kEventNoSpace);
    blksnap_event_no_space no_space;
    std::memcpy(&no_space, event.data, sizeof(no_space));
    EXPECT_EQ(no_space.requested_nr_sect, 8192u);
  }
  ASSERT_EQ(driver_->WaitEvent(id, 0, &event), 0);
  EXPECT_EQ(event.code, kEventCorrupted);
  EXPECT_GE(event.time_label, start);
  blksnap_event_corrupted corrupted;
  std::memcpy(&corrupted, event.data, sizeof(corrupted));
  EXPECT_EQ(corrupted.dev_id_mj, 7u);
  EXPECT_EQ(corrupted.dev_id_mn, 0u);
  EXPECT_EQ(corrupted.err_code, 28);
  for (size_t i = sizeof(corrupted); i < kEventDataSize; ++i) ASSERT_EQ(event.data[i], 0);
  EXPECT_EQ(driver_->WaitEvent(id, 0, &event), ENOENT);

  ASSERT_EQ(driver_->SnapshotInfo(kDev, &info), 0);
  EXPECT_EQ(info.error_code, -28);
  EXPECT_EQ(kernel_->ReadDevice(image, 0, 4096).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(kernel_->WriteDevice(image, 0, "x").code(), absl::StatusCode::kDataLoss);
  auto origin = kernel_->ReadDevice(kDev, 0, after.size());
  ASSERT_TRUE(origin.ok());
  EXPECT_TRUE(*origin == after);
  // Further writes keep working (no copy-on-write any more).
  EXPECT_TRUE(kernel_->WriteDevice(kDev, 10 * kMiB, "more").ok());

  ASSERT_EQ(driver_->Destroy(id), 0);
  std::memset(&info, 0, sizeof(info));
  ASSERT_EQ(driver_->SnapshotInfo(kDev, &info), 0);
  EXPECT_EQ(info.error_code, 0);
}

TEST_P(EmulatorTest, HotRemovalDetachesTheFilterAndFailsTheImage) {
  const blksnap_uuid id = TakeSnapshot();
  const std::string image = ImagePath(flavour(), 7, 0);
  const int fd = driver_->FilterFd(kDev);  // opened before the removal
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(kernel_->RemoveDevice(kDev).ok());
  FileStatus status;
  EXPECT_EQ(kernel_->Stat(kDev, &status), ENOENT);
  EXPECT_EQ(kernel_->ReadDevice(image, 0, 512).status().code(), absl::StatusCode::kDataLoss);
  blksnap_cbtinfo info{};
  // The dead disk answers ENODEV on its old fd; VAL-7.0 cannot even look the path up.
  EXPECT_EQ(driver_->CbtInfo(kDev, &info), upstream() ? ENODEV : ENOENT);
  EXPECT_EQ(driver_->Destroy(id), 0);
  EXPECT_EQ(kernel_->Stat(image, &status), ENOENT);

  // The device comes back: a new tracker, the CBT history is gone.
  ASSERT_TRUE(kernel_->AddDevice(kDev, 64 * kMiB, 7, 0).ok());
  Driver fresh(kernel_.get(), flavour());
  ASSERT_EQ(fresh.Attach(kDev), 0);
  ASSERT_EQ(fresh.CbtInfo(kDev, &info), 0);
  EXPECT_EQ(info.changes_number, 0);
}

TEST_P(EmulatorTest, MultiDeviceSnapshot) {
  ASSERT_EQ(driver_->Attach(kDev), 0);
  ASSERT_EQ(driver_->Attach(kDev2), 0);
  ASSERT_TRUE(kernel_->WriteDevice(kDev2, 0, "second device").ok());
  blksnap_uuid id{};
  ASSERT_EQ(driver_->Create(storage_, kGiBSectors, &id), 0);
  ASSERT_EQ(driver_->SnapshotAdd(kDev, id), 0);
  ASSERT_EQ(driver_->SnapshotAdd(kDev2, id), 0);
  ASSERT_EQ(driver_->Take(id), 0);
  ASSERT_TRUE(kernel_->WriteDevice(kDev2, 0, "changed after").ok());
  auto image = kernel_->ReadDevice(ImagePath(flavour(), 7, 1), 0, 13);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(*image, "second device");
  uint64_t size = 0;
  ASSERT_EQ(driver_->BlockSize64(ImagePath(flavour(), 7, 1), &size), 0);
  EXPECT_EQ(size, 32 * kMiB);
  FileStatus first, second;
  ASSERT_EQ(kernel_->Stat(ImagePath(flavour(), 7, 0), &first), 0);
  ASSERT_EQ(kernel_->Stat(ImagePath(flavour(), 7, 1), &second), 0);
  EXPECT_NE(first.rdev_minor, second.rdev_minor);
  ASSERT_EQ(driver_->Destroy(id), 0);
}

// The documented hazard: v7's BLKFILTER_CTL number is lk6.15's BLKFILTER_ATTACH.
TEST(FlavourHazardTest, SameNumberMeansCtlOnV7AndAttachOnLk615) {
  TempDir temp;
  for (Flavour flavour : {Flavour::kV7, Flavour::kLk615}) {
    EmulatorOptions options;
    options.flavour = flavour;
    options.backing_dir = temp.path();
    EmulatedKernel kernel(options);
    ASSERT_TRUE(kernel.AddDevice(kDev, 64 * kMiB, 7, 0).ok());
    int fd = -1;
    ASSERT_EQ(kernel.Open(kDev, O_RDONLY, &fd), 0);

    // What an lk6.15 binary sends to attach.
    blkfilter_attach attach{};
    std::memcpy(attach.name, "blksnap", 7);
    // What a v7 binary sends to read the CBT info.
    blksnap_cbtinfo info{};
    blkfilter_ctl ctl{};
    std::memcpy(ctl.name, "blksnap", 7);
    ctl.cmd = kCtlCbtInfo;
    ctl.optlen = sizeof(info);
    ctl.opt = reinterpret_cast<uintptr_t>(&info);
    static_assert(kV7BlkfilterCtl == kLk615BlkfilterAttach);
    const unsigned long shared = kV7BlkfilterCtl;

    if (flavour == Flavour::kV7) {
      // Not attached: the "attach" is a CTL and fails with ENOENT.
      EXPECT_EQ(kernel.Ioctl(fd, shared, &attach), ENOENT);
      // lk6.15's other numbers do not exist here.
      EXPECT_EQ(kernel.Ioctl(fd, kLk615BlkfilterCtl, &ctl), ENOTTY);
      EXPECT_EQ(kernel.Ioctl(fd, kLk615BlkfilterDetach, &attach), ENOTTY);
      blkfilter_name name{};
      std::memcpy(name.name, "blksnap", 7);
      ASSERT_EQ(kernel.Ioctl(fd, kV7BlkfilterAttach, &name), 0);
      // Attached: the lk6.15 attach struct read as a ctl is cmd 0 (CBTINFO) with optlen 0.
      EXPECT_EQ(kernel.Ioctl(fd, shared, &attach), EINVAL);
      // The real CTL works.
      EXPECT_EQ(kernel.Ioctl(fd, shared, &ctl), 0);
      EXPECT_EQ(info.block_count, 1024u);
    } else {
      // A v7 binary's CBTINFO request attaches the filter on lk6.15 ...
      EXPECT_EQ(kernel.Ioctl(fd, shared, &ctl), 0);
      EXPECT_EQ(info.block_count, 0u);  // ... and fills in nothing
      EXPECT_EQ(kernel.Ioctl(fd, shared, &attach), EALREADY);
      EXPECT_EQ(kernel.Ioctl(fd, kLk615BlkfilterCtl, &ctl), 0);
      EXPECT_EQ(info.block_count, 1024u);
      // v7's attach and detach numbers do not exist here.
      blkfilter_name name{};
      std::memcpy(name.name, "blksnap", 7);
      EXPECT_EQ(kernel.Ioctl(fd, kV7BlkfilterAttach, &name), ENOTTY);
      EXPECT_EQ(kernel.Ioctl(fd, kV7BlkfilterDetach, &name), ENOTTY);
    }
    EXPECT_EQ(kernel.Close(fd), 0);
  }
}

TEST(EmulatedKernelTest, UserMemory) {
  LocalMemory local;
  uint64_t value = 0;
  const uint64_t source = 0x1122334455667788;
  EXPECT_TRUE(local.Read(reinterpret_cast<uintptr_t>(&source), &value, sizeof(value)));
  EXPECT_EQ(value, source);
  EXPECT_FALSE(local.Read(0, &value, sizeof(value)));
  EXPECT_TRUE(local.Read(0, &value, 0));

  ProcessMemory self(::getpid());
  value = 0;
  EXPECT_TRUE(self.Read(reinterpret_cast<uintptr_t>(&source), &value, sizeof(value)));
  EXPECT_EQ(value, source);
  uint64_t target = 0;
  EXPECT_TRUE(self.Write(reinterpret_cast<uintptr_t>(&target), &source, sizeof(source)));
  EXPECT_EQ(target, source);
  EXPECT_FALSE(self.Read(0, &value, sizeof(value)));
}

TEST(EmulatedKernelTest, ParseFlavour) {
  EXPECT_EQ(*ParseFlavour("lk6.15"), Flavour::kLk615);
  EXPECT_EQ(*ParseFlavour("v7"), Flavour::kV7);
  EXPECT_EQ(*ParseFlavour("val7"), Flavour::kVal7);
  EXPECT_FALSE(ParseFlavour("v6").ok());
}

}  // namespace
}  // namespace cbt::blksnap::emulator
