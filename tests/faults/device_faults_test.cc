// A tracked device removed (hot unplug) while the agent serves it and another device. Diff
// storage overflow is tested in tests/integration/lifecycle_test.cc
// (LifecycleTest.DiffStorageOverflowIsStreamedAsEvents) and, after a restart, in
// kill_points_test.cc (KilledDuringReadCbtMapStream...).
#include <gtest/gtest.h>
#include <signal.h>

#include "fault_fixture.h"

namespace cbt::testing {
namespace {

class DeviceFaultTest : public FaultTest {};

// What the agent answers for a device that is gone.
void ExpectGone(AgentHarness& h, const std::string& device) {
  EXPECT_EQ(TryGetTracker(h, device).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(TryGetCbtInfo(h, device).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(TryReadMap(h, device, 0, 0).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(TryMarkDirty(h, device, {{0, 4096}}).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::Status snapshot = TryCreateSnapshot(h, {device}, 64 * kMiB, "");
  EXPECT_EQ(snapshot.error_code(), grpc::StatusCode::NOT_FOUND) << snapshot.error_message();
}

TEST_P(DeviceFaultTest, DeviceRemovedWhileTrackedOtherDeviceKeepsServing) {
  AttachAll({kDevA, kDevB});
  Write(kDevA, 0, Pattern(4096, 1));
  Write(kDevB, 0, Pattern(4096, 2));
  Write(kDevB, 3 * kMiB, Pattern(4096, 3));

  ASSERT_TRUE(h().kernel().RemoveDevice(kDevA).ok());
  written_.erase(kDevA);  // its bytes left with it
  ExpectGone(h(), kDevA);
  ExpectTrackers({kDevB});

  // B is served as before: a full cycle (with every change reported), its data.
  ExpectFullCycle({kDevB});
  ExpectNoDataLost();

  // And after a crash the agent starts with B only.
  h().StopAgent(SIGKILL);
  Restart();
  ExpectTrackers({kDevB});
  ExpectGone(h(), kDevA);
  ExpectFullCycle({kDevB});
  ExpectNoDataLost();
}

TEST_P(DeviceFaultTest, DeviceRemovedWhileInASnapshot) {
  AttachAll({kDevA, kDevB});
  Write(kDevA, 0, Pattern(4096, 1));
  const std::string b_at_take = Pattern(4096, 2);
  Write(kDevB, 0, b_at_take);
  v1::Snapshot s = CreateSnapshot(h(), {kDevA, kDevB}, 64 * kMiB);
  ASSERT_EQ(s.devices_size(), 2);

  ASSERT_TRUE(h().kernel().RemoveDevice(kDevA).ok());
  written_.erase(kDevA);
  Write(kDevB, 0 + kBlock, Pattern(4096, 3));

  // The snapshot reports the loss on A's member; B's image is intact.
  v1::GetSnapshotRequest get;
  get.set_snapshot_id(s.id());
  v1::Snapshot state;
  ASSERT_TRUE(h().agent().GetSnapshot(Deadline().get(), get, &state).ok());
  EXPECT_EQ(state.state(), v1::SNAPSHOT_STATE_CORRUPTED);
  ASSERT_EQ(state.devices_size(), 2);
  for (const auto& device : state.devices()) {
    if (device.device() == kDevA) {
      EXPECT_NE(device.error_code(), 0);
    } else {
      EXPECT_EQ(device.error_code(), 0);
      auto image = h().kernel().ReadDevice(device.image_path(), 0, b_at_take.size());
      ASSERT_TRUE(image.ok()) << image.status();
      EXPECT_TRUE(*image == b_at_take);
    }
  }
  EXPECT_FALSE(h().kernel().ReadDevice(s.devices(0).image_path(), 0, 4096).ok())
      << "the image of the removed device fails I/O";
  ExpectTrackers({kDevB});

  Release(h(), s.id());
  ExpectSnapshots({});
  ExpectGone(h(), kDevA);
  ExpectFullCycle({kDevB});
  ExpectNoDataLost();
}

INSTANTIATE_TEST_SUITE_P(Flavours, DeviceFaultTest, ::testing::ValuesIn(AllFlavours()),
                         FlavourCaseName);

}  // namespace
}  // namespace cbt::testing
