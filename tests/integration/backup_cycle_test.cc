// The full incremental-backup cycle through the real daemon and a real gRPC client, for each
// blksnap interface flavour behind the emulator.
#include <gtest/gtest.h>

#include "api_calls.h"

namespace cbt::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kBlock = 64 * 1024;
const char kDevA[] = "/dev/emu-a";
const char kDevB[] = "/dev/emu-b";

struct FlavourCase {
  const char* flavour;
  const char* kernel_release;
  const char* image_a;  // image of /dev/emu-a (8:16)
  const char* image_b;  // image of /dev/emu-b (8:32)
};

class BackupCycleTest : public ::testing::TestWithParam<FlavourCase> {
 protected:
  void SetUp() override {
    harness_ = std::make_unique<AgentHarness>(
        GetParam().flavour, GetParam().kernel_release,
        std::vector<EmulatedDevice>{{kDevA, 64 * kMiB, 8, 16}, {kDevB, 128 * kMiB, 8, 32}});
    ASSERT_TRUE(harness_->StartEmulator());
    ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();
  }
  void Write(const std::string& device, uint64_t offset, const std::string& data) {
    ASSERT_TRUE(harness_->kernel().WriteDevice(device, offset, data).ok());
  }
  std::string Read(const std::string& device, uint64_t offset, uint64_t length) {
    auto data = harness_->kernel().ReadDevice(device, offset, length);
    EXPECT_TRUE(data.ok()) << data.status();
    return data.ok() ? *data : "";
  }
  std::unique_ptr<AgentHarness> harness_;
};

TEST_P(BackupCycleTest, FullThenIncrementalThenGenerationWrap) {
  AgentHarness& h = *harness_;
  const std::string before = Pattern(kBlock, 1);
  Write(kDevA, 0, before);  // before tracking: not in the CBT

  auto attached = Attach(h, kDevA);
  EXPECT_FALSE(attached.already_attached());
  EXPECT_EQ(attached.tracker().resolved_path(), kDevA);
  EXPECT_EQ(attached.tracker().major(), 8u);
  EXPECT_EQ(attached.tracker().minor(), 16u);
  EXPECT_EQ(attached.tracker().capacity_bytes(), 64 * kMiB);
  EXPECT_TRUE(Attach(h, kDevA).already_attached()) << "attach is idempotent";

  Write(kDevA, 0, Pattern(4096, 2));          // block 0
  Write(kDevA, 10 * kMiB, Pattern(4096, 3));  // block 160

  v1::Snapshot first = CreateSnapshot(h, {kDevA}, 1024 * kMiB);
  ASSERT_EQ(first.devices_size(), 1);
  EXPECT_EQ(first.devices(0).image_path(), GetParam().image_a);
  EXPECT_EQ(first.state(), v1::SNAPSHOT_STATE_ACTIVE);
  EXPECT_EQ(first.id().size(), 36u);

  v1::CbtInfo info = Info(h, kDevA);
  EXPECT_EQ(info.capacity_bytes(), 64 * kMiB);
  EXPECT_EQ(info.block_size(), kBlock);
  EXPECT_EQ(info.block_count(), 1024u);
  EXPECT_EQ(info.changes_number(), 1u);
  const std::string generation = info.generation_id();

  std::vector<uint8_t> map = ReadMap(h, kDevA);
  ASSERT_EQ(map.size(), 1024u);
  for (size_t i = 0; i < map.size(); ++i) {
    EXPECT_EQ(map[i], (i == 0 || i == 160) ? 1 : 0) << "block " << i;
  }
  ExtentsResult since_attach = Extents(h, kDevA, generation, 0);
  ASSERT_TRUE(since_attach.status.ok()) << since_attach.status.error_message();
  EXPECT_EQ(since_attach.extents,
            (std::vector<std::pair<uint64_t, uint64_t>>{{0, kBlock}, {10 * kMiB, kBlock}}));
  EXPECT_TRUE(since_attach.last.complete());
  EXPECT_EQ(since_attach.last.changed_bytes(), 2 * kBlock);
  EXPECT_EQ(since_attach.last.changes_number(), 1u);

  // Copy-on-write: the image keeps the bytes of take time, the origin takes the new ones.
  const std::string at_take = Read(kDevA, 0, kBlock);
  const std::string overwrite = Pattern(kBlock, 4);
  Write(kDevA, 0, overwrite);
  EXPECT_EQ(Read(first.devices(0).image_path(), 0, kBlock), at_take);
  EXPECT_EQ(Read(kDevA, 0, kBlock), overwrite);
  Release(h, first.id());

  Write(kDevA, 20 * kMiB, Pattern(100, 5));  // block 320
  v1::Snapshot second = CreateSnapshot(h, {kDevA}, 1024 * kMiB);
  EXPECT_EQ(Info(h, kDevA).changes_number(), 2u);
  ExtentsResult incremental = Extents(h, kDevA, generation, 1);
  ASSERT_TRUE(incremental.status.ok()) << incremental.status.error_message();
  EXPECT_EQ(incremental.extents,
            (std::vector<std::pair<uint64_t, uint64_t>>{{0, kBlock}, {20 * kMiB, kBlock}}))
      << "only what was written after the first snapshot";
  Release(h, second.id());

  // Takes 3..254 keep the generation; the 255th makes the active number reach 256, which
  // restarts the history with a new generation (changes number 255, write map cleared).
  for (int n = 3; n <= 254; ++n) {
    v1::Snapshot s = CreateSnapshot(h, {kDevA}, 1024 * kMiB);
    Release(h, s.id());
  }
  v1::CbtInfo at254 = Info(h, kDevA);
  EXPECT_EQ(at254.changes_number(), 254u);
  EXPECT_EQ(at254.generation_id(), generation);
  v1::Snapshot wrapped = CreateSnapshot(h, {kDevA}, 1024 * kMiB);
  v1::CbtInfo after_wrap = Info(h, kDevA);
  EXPECT_EQ(after_wrap.changes_number(), 255u);
  EXPECT_NE(after_wrap.generation_id(), generation) << "the 255th take starts a generation";
  ExtentsResult stale = Extents(h, kDevA, generation, 200);
  EXPECT_EQ(stale.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(stale.status.error_message().find("full backup required"), std::string::npos)
      << stale.status.error_message();
  EXPECT_EQ(stale.full_backup_trailer, "true");
  Release(h, wrapped.id());

  // The full backup taken at the wrap recorded (new generation, 255): the next incremental from
  // it lists exactly what was written since.
  Write(kDevA, 30 * kMiB, Pattern(4096, 6));  // block 480
  v1::Snapshot next = CreateSnapshot(h, {kDevA}, 1024 * kMiB);
  EXPECT_EQ(Info(h, kDevA).changes_number(), 1u);
  ExtentsResult from_wrap = Extents(h, kDevA, after_wrap.generation_id(), 255);
  ASSERT_TRUE(from_wrap.status.ok()) << from_wrap.status.error_message();
  EXPECT_EQ(from_wrap.extents,
            (std::vector<std::pair<uint64_t, uint64_t>>{{30 * kMiB, kBlock}}));
  Release(h, next.id());
}

TEST_P(BackupCycleTest, MultiDeviceSnapshotAndPagedExtents) {
  AgentHarness& h = *harness_;
  Attach(h, kDevA);
  Attach(h, kDevB);
  for (int i = 0; i < 10; ++i) Write(kDevB, (2 * i) * kBlock, Pattern(512, 10 + i));
  v1::Snapshot s = CreateSnapshot(h, {kDevA, kDevB}, 1024 * kMiB);
  ASSERT_EQ(s.devices_size(), 2);
  EXPECT_EQ(s.devices(0).image_path(), GetParam().image_a);
  EXPECT_EQ(s.devices(1).image_path(), GetParam().image_b);

  v1::ListSnapshotsResponse list;
  ASSERT_TRUE(h.agent().ListSnapshots(Deadline().get(), {}, &list).ok());
  ASSERT_EQ(list.snapshots_size(), 1);
  EXPECT_EQ(list.snapshots(0).id(), s.id());
  EXPECT_TRUE(list.snapshots(0).known_to_agent());

  v1::ListTrackersResponse trackers;
  ASSERT_TRUE(h.agent().ListTrackers(Deadline().get(), {}, &trackers).ok());
  ASSERT_EQ(trackers.trackers_size(), 2);
  for (const auto& t : trackers.trackers()) EXPECT_EQ(t.snapshot_id(), s.id());

  // Ten separate blocks on B, read back three at a time and resumed from next_offset.
  const std::string generation = Info(h, kDevB).generation_id();
  std::vector<std::pair<uint64_t, uint64_t>> all;
  uint64_t start = 0;
  for (int page = 0; page < 10; ++page) {
    ExtentsResult r = Extents(h, kDevB, generation, 0, start, 3);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    all.insert(all.end(), r.extents.begin(), r.extents.end());
    if (r.last.complete()) break;
    start = r.last.next_offset();
  }
  ASSERT_EQ(all.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(all[i], std::make_pair(uint64_t(2 * i) * kBlock, kBlock));
  }

  // MarkDirty shows in the map being read now (as the current changes number).
  v1::MarkDirtyRequest dirty;
  dirty.set_device(kDevA);
  auto* range = dirty.add_ranges();
  range->set_offset(5 * kBlock + 100);  // widened to whole sectors, inside block 5
  range->set_length(10);
  v1::MarkDirtyResponse marked;
  ASSERT_TRUE(h.agent().MarkDirty(Deadline().get(), dirty, &marked).ok());
  EXPECT_EQ(marked.marked_bytes(), 512u);
  std::vector<uint8_t> map = ReadMap(h, kDevA);
  EXPECT_EQ(map[5], 1);
  Release(h, s.id());
}

INSTANTIATE_TEST_SUITE_P(
    Flavours, BackupCycleTest,
    ::testing::Values(FlavourCase{"lk6.15", "6.15.0", "/dev/blksnap-8-16", "/dev/blksnap-8-32"},
                      FlavourCase{"v7", "6.9.0", "/dev/blksnap-image_8:16",
                                  "/dev/blksnap-image_8:32"},
                      FlavourCase{"val7", "6.1.0-50-amd64", "/dev/veeamblksnapimg_8:16",
                                  "/dev/veeamblksnapimg_8:32"}),
    [](const ::testing::TestParamInfo<FlavourCase>& info) {
      std::string name = info.param.flavour;
      for (char& c : name) {
        if (c == '.') c = '_';
      }
      return name;
    });

}  // namespace
}  // namespace cbt::testing
