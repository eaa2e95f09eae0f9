// The VAL-7.0 reference run of blksnap-real-module.md §3 (rows 9–30), replayed against the
// emulator for every flavour through raw ioctls: a 64 MiB device 7:0, CBT info right after
// attach, blocks 0/16/160/1008 written before TAKE #1, the image keeping the old data after an
// overwrite at 1 MiB and zeros at 20 MiB, CBTDIRTY, WAIT_EVENT, destroy, and a second snapshot
// with changes number 2.
#include <fcntl.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
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
constexpr uint64_t kBlock = 65536;

class ReferenceScenarioTest : public ::testing::TestWithParam<Flavour> {};

std::string ParamName(const ::testing::TestParamInfo<Flavour>& info) {
  return testing::FlavourTestName(info.param);
}

INSTANTIATE_TEST_SUITE_P(AllFlavours, ReferenceScenarioTest,
                         ::testing::Values(Flavour::kLk615, Flavour::kV7, Flavour::kVal7),
                         ParamName);

TEST_P(ReferenceScenarioTest, Val70Rows9To30) {
  const Flavour flavour = GetParam();
  TempDir temp;
  EmulatorOptions options;
  options.flavour = flavour;
  options.backing_dir = temp.path();
  EmulatedKernel kernel(options);
  ASSERT_TRUE(kernel.AddDevice(kDev, 64 * kMiB, 7, 0).ok());
  Driver driver(&kernel, flavour);
  const std::string storage = temp.Subdir("storage");

  // Rows 5, 8: attach "blksnap"; an unknown name is ENOENT.
  EXPECT_EQ(driver.Attach(kDev, "noname"), ENOENT);
  ASSERT_EQ(driver.Attach(kDev), 0);

  // Row 9: CBTINFO.
  uint8_t raw[64] = {};
  EXPECT_EQ(driver.Ctl(kDev, kCtlCbtInfo, raw, 33), EINVAL);
  EXPECT_EQ(driver.Ctl(kDev, kCtlCbtInfo, raw, 39), EINVAL);
  blksnap_cbtinfo info{};
  ASSERT_EQ(driver.CbtInfo(kDev, &info), 0);
  EXPECT_EQ(info.device_capacity, 67108864u);
  EXPECT_EQ(info.block_size, 65536u);
  EXPECT_EQ(info.block_count, 1024u);
  EXPECT_FALSE(testing::UuidIsNil(info.generation_id));
  EXPECT_EQ(info.changes_number, 0);
  const std::string generation = testing::UuidText(info.generation_id);

  // Row 10: CBTMAP.
  EXPECT_EQ(driver.Ctl(kDev, kCtlCbtMap, raw, 15), EINVAL);
  std::vector<uint8_t> map;
  ASSERT_EQ(driver.CbtMapAll(kDev, &map), 0);
  EXPECT_EQ(map, std::vector<uint8_t>(1024, 0));

  // Data before TAKE #1: blocks 0, 16, 160, 1008.
  std::map<uint64_t, std::string> before;
  for (uint64_t block : {0u, 16u, 160u, 1008u}) {
    before[block] = Pattern(kBlock, static_cast<uint32_t>(block) + 100);
    ASSERT_TRUE(kernel.WriteDevice(kDev, block * kBlock, before[block]).ok());
  }
  // The read map is frozen until the next take.
  ASSERT_EQ(driver.CbtMapAll(kDev, &map), 0);
  EXPECT_EQ(map, std::vector<uint8_t>(1024, 0));

  // Rows 12, 13, 15, 16.
  EXPECT_EQ(driver.Ctl(kDev, kCtlSnapshotAdd, raw, 15), EINVAL);
  EXPECT_EQ(driver.Ctl(kDev, kCtlSnapshotInfo, raw, 35), EINVAL);
  blksnap_version version{};
  ASSERT_EQ(driver.Version(&version), 0);
  EXPECT_EQ(version.major, flavour == Flavour::kVal7 ? 7 : 2);
  blksnap_uuid id{};
  ASSERT_EQ(driver.Create(storage, 2097152, &id), 0);
  EXPECT_FALSE(testing::UuidIsNil(id));
  ASSERT_EQ(driver.SnapshotAdd(kDev, id), 0);
  blksnap_snapshotinfo snapinfo{};
  ASSERT_EQ(driver.SnapshotInfo(kDev, &snapinfo), 0);
  EXPECT_EQ(snapinfo.error_code, 0);
  EXPECT_STREQ(reinterpret_cast<const char*>(snapinfo.image), "");

  // Row 18: TAKE, then EALREADY.
  ASSERT_EQ(driver.Take(id), 0);
  EXPECT_EQ(driver.Take(id), EALREADY);

  // Rows 13, 22: image name and node.
  ASSERT_EQ(driver.SnapshotInfo(kDev, &snapinfo), 0);
  const std::string image = ImagePath(flavour, 7, 0);
  EXPECT_EQ("/dev/" + std::string(reinterpret_cast<const char*>(snapinfo.image)), image);
  FileStatus status;
  ASSERT_EQ(kernel.Stat(image, &status), 0);
  EXPECT_TRUE(status.is_block_device);
  EXPECT_EQ(status.rdev_major, 259u);
  uint64_t size = 0;
  ASSERT_EQ(driver.BlockSize64(image, &size), 0);
  EXPECT_EQ(size, 64 * kMiB);

  // Row 27: changes number 1, exactly the written blocks = 1, same generation.
  ASSERT_EQ(driver.CbtInfo(kDev, &info), 0);
  EXPECT_EQ(info.changes_number, 1);
  EXPECT_EQ(testing::UuidText(info.generation_id), generation);
  ASSERT_EQ(driver.CbtMapAll(kDev, &map), 0);
  for (uint64_t block = 0; block < 1024; ++block) {
    const bool written = before.count(block) != 0;
    EXPECT_EQ(map[block], written ? 1 : 0) << "block " << block;
  }

  // Row 28: after TAKE the origin has the new data, the image the old data (and zeros where
  // nothing had been written).
  const std::string after16 = Pattern(kBlock, 777);
  const std::string after320 = Pattern(kBlock, 778);
  ASSERT_TRUE(kernel.WriteDevice(kDev, 1 * kMiB, after16).ok());   // block 16
  ASSERT_TRUE(kernel.WriteDevice(kDev, 20 * kMiB, after320).ok());  // block 320
  auto origin = kernel.ReadDevice(kDev, 1 * kMiB, kBlock);
  ASSERT_TRUE(origin.ok());
  EXPECT_TRUE(*origin == after16);
  auto old_data = kernel.ReadDevice(image, 1 * kMiB, kBlock);
  ASSERT_TRUE(old_data.ok());
  EXPECT_TRUE(*old_data == before[16]);
  auto zeros = kernel.ReadDevice(image, 20 * kMiB, kBlock);
  ASSERT_TRUE(zeros.ok());
  EXPECT_EQ(*zeros, std::string(kBlock, '\0'));
  auto untouched = kernel.ReadDevice(image, 160 * kBlock, kBlock);
  ASSERT_TRUE(untouched.ok());
  EXPECT_TRUE(*untouched == before[160]);
  // Writes after TAKE stay invisible in the read map.
  ASSERT_EQ(driver.CbtMapAll(kDev, &map), 0);
  EXPECT_EQ(map[320], 0);

  // Row 11: CBTDIRTY block 500 whole and one sector inside block 600 -> visible at once.
  ASSERT_EQ(driver.CbtDirty(kDev, {{500 * 128, 128}, {600 * 128 + 17, 1}}), 0);
  ASSERT_EQ(driver.CbtMapAll(kDev, &map), 0);
  EXPECT_EQ(map[500], 1);
  EXPECT_EQ(map[600], 1);

  // Row 29: WAIT_EVENT without an event, and with an unknown id.
  blksnap_snapshot_event event;
  EXPECT_EQ(driver.WaitEvent(id, 10, &event), ENOENT);
  blksnap_uuid unknown = id;
  unknown.b[0] ^= 0xFF;
  EXPECT_EQ(driver.WaitEvent(unknown, 10, &event), ESRCH);

  // Row 19: COLLECT.
  std::vector<blksnap_uuid> ids;
  uint32_t count = 0;
  ASSERT_EQ(driver.Collect(0, false, &ids, &count), 0);
  EXPECT_EQ(count, 1u);
  ASSERT_EQ(driver.Collect(4, true, &ids, &count), 0);
  ASSERT_EQ(count, 1u);
  EXPECT_EQ(testing::UuidText(ids[0]), testing::UuidText(id));

  // Row 17: DESTROY removes the image; the CBT stays.
  ASSERT_EQ(driver.Destroy(id), 0);
  EXPECT_EQ(kernel.Stat(image, &status), ENOENT);
  std::memset(&snapinfo, 0, sizeof(snapinfo));
  ASSERT_EQ(driver.SnapshotInfo(kDev, &snapinfo), 0);
  EXPECT_STREQ(reinterpret_cast<const char*>(snapinfo.image), "");
  ASSERT_EQ(driver.CbtInfo(kDev, &info), 0);
  EXPECT_EQ(info.changes_number, 1);
  EXPECT_EQ(driver.WaitEvent(id, 1, &event), ESRCH);

  // Row 30: second create/add/take.
  blksnap_uuid id2{};
  ASSERT_EQ(driver.Create(storage, 2097152, &id2), 0);
  ASSERT_EQ(driver.SnapshotAdd(kDev, id2), 0);
  ASSERT_EQ(driver.Take(id2), 0);
  ASSERT_EQ(driver.CbtInfo(kDev, &info), 0);
  EXPECT_EQ(info.changes_number, 2);
  EXPECT_EQ(testing::UuidText(info.generation_id), generation);
  ASSERT_EQ(driver.CbtMapAll(kDev, &map), 0);
  for (uint64_t block = 0; block < 1024; ++block) {
    uint8_t expected = 0;
    if (block == 0 || block == 160 || block == 1008) expected = 1;
    if (block == 16 || block == 320 || block == 500 || block == 600) expected = 2;
    EXPECT_EQ(map[block], expected) << "block " << block;
  }
  // Image #2 shows the data written after TAKE #1.
  auto second = kernel.ReadDevice(image, 1 * kMiB, kBlock);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(*second == after16);
  ASSERT_EQ(driver.Destroy(id2), 0);

  // Row 6: DETACH, then ENOENT; the CBT is gone with it.
  ASSERT_EQ(driver.Detach(kDev), 0);
  EXPECT_EQ(driver.Detach(kDev), ENOENT);
  ASSERT_EQ(driver.Attach(kDev), 0);
  ASSERT_EQ(driver.CbtInfo(kDev, &info), 0);
  EXPECT_EQ(info.changes_number, 0);
  EXPECT_NE(testing::UuidText(info.generation_id), generation);
}

}  // namespace
}  // namespace cbt::blksnap::emulator
