// The daemon's life: restarts (clean and kill -9) with snapshots held, snapshot events over a
// stream, graceful SIGTERM.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <thread>

#include "api_calls.h"

namespace cbt::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
const char kDev[] = "/dev/emu-a";

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    harness_ = std::make_unique<AgentHarness>(
        "lk6.15", "6.15.0", std::vector<EmulatedDevice>{{kDev, 64 * kMiB, 8, 16}});
    ASSERT_TRUE(harness_->StartEmulator());
    ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();
  }
  std::unique_ptr<AgentHarness> harness_;
};

TEST_F(LifecycleTest, KilledAgentComesBackKnowingTrackersAndSnapshots) {
  Attach(*harness_, kDev);
  ASSERT_TRUE(harness_->kernel().WriteDevice(kDev, 0, Pattern(4096, 1)).ok());
  v1::Snapshot s = CreateSnapshot(*harness_, {kDev}, 64 * kMiB);
  const std::string generation = Info(*harness_, kDev).generation_id();

  harness_->StopAgent(SIGKILL);
  ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();

  v1::GetTrackerRequest tracker_request;
  tracker_request.set_device(kDev);
  v1::Tracker tracker;
  ASSERT_TRUE(harness_->agent().GetTracker(Deadline().get(), tracker_request, &tracker).ok());
  EXPECT_EQ(tracker.resolved_path(), kDev);
  EXPECT_EQ(tracker.snapshot_id(), s.id());

  v1::ListSnapshotsResponse list;
  ASSERT_TRUE(harness_->agent().ListSnapshots(Deadline().get(), {}, &list).ok());
  ASSERT_EQ(list.snapshots_size(), 1);
  EXPECT_EQ(list.snapshots(0).id(), s.id());
  EXPECT_TRUE(list.snapshots(0).known_to_agent());
  ASSERT_EQ(list.snapshots(0).devices_size(), 1);
  EXPECT_EQ(list.snapshots(0).devices(0).image_path(), "/dev/blksnap-8-16");

  // The kernel kept the CBT: same generation, and the backup cycle goes on.
  EXPECT_EQ(Info(*harness_, kDev).generation_id(), generation);
  ExtentsResult extents = Extents(*harness_, kDev, generation, 0);
  ASSERT_TRUE(extents.status.ok());
  EXPECT_EQ(extents.extents.size(), 1u);
  Release(*harness_, s.id());
  ASSERT_TRUE(harness_->agent().ListSnapshots(Deadline().get(), {}, &list).ok());
}

TEST_F(LifecycleTest, SigtermStopsGracefullyAndLeavesKernelObjects) {
  Attach(*harness_, kDev);
  v1::Snapshot s = CreateSnapshot(*harness_, {kDev}, 64 * kMiB);
  // An open event stream must not keep the daemon from stopping.
  grpc::ClientContext watch_context;
  v1::WatchSnapshotEventsRequest watch_request;
  auto watcher = harness_->agent().WatchSnapshotEvents(&watch_context, watch_request);

  const int status = harness_->StopAgent(SIGTERM, 20000);
  ASSERT_NE(status, -1) << "the daemon did not stop within 20 s";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << harness_->AgentLog();
  EXPECT_NE(harness_->AgentLog().find("stopped"), std::string::npos);

  ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();
  v1::GetSnapshotRequest get;
  get.set_snapshot_id(s.id());
  v1::Snapshot again;
  ASSERT_TRUE(harness_->agent().GetSnapshot(Deadline().get(), get, &again).ok());
  EXPECT_EQ(again.devices(0).image_path(), "/dev/blksnap-8-16");
  Release(*harness_, s.id());
}

TEST_F(LifecycleTest, DiffStorageOverflowIsStreamedAsEvents) {
  Attach(*harness_, kDev);
  // 4 MiB limit with the first 2 MiB reserved: room for 8 chunks of 256 KiB.
  v1::Snapshot s = CreateSnapshot(*harness_, {kDev}, 4 * kMiB);
  grpc::ClientContext watch_context;
  v1::WatchSnapshotEventsRequest watch_request;
  watch_request.set_snapshot_id(s.id());
  auto watcher = harness_->agent().WatchSnapshotEvents(&watch_context, watch_request);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the stream subscribe

  const std::string data = Pattern(8 * kMiB, 7);
  ASSERT_TRUE(harness_->kernel().WriteDevice(kDev, 0, data).ok());
  auto origin = harness_->kernel().ReadDevice(kDev, 0, data.size());
  ASSERT_TRUE(origin.ok());
  EXPECT_TRUE(*origin == data) << "the origin keeps every byte written";

  v1::SnapshotEvent event;
  bool corrupted = false;
  watch_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  while (!corrupted && watcher->Read(&event)) {
    EXPECT_EQ(event.snapshot_id(), s.id());
    if (event.has_corrupted()) {
      corrupted = true;
      EXPECT_EQ(event.corrupted().errno_value(), 28);
      EXPECT_EQ(event.corrupted().device(), kDev);
      EXPECT_EQ(event.corrupted().major(), 8u);
    }
  }
  EXPECT_TRUE(corrupted) << "no corrupted event arrived";
  watch_context.TryCancel();

  v1::GetSnapshotRequest get;
  get.set_snapshot_id(s.id());
  v1::Snapshot state;
  ASSERT_TRUE(harness_->agent().GetSnapshot(Deadline().get(), get, &state).ok());
  EXPECT_EQ(state.state(), v1::SNAPSHOT_STATE_CORRUPTED);
  EXPECT_EQ(state.devices(0).error_code(), -28);
  EXPECT_FALSE(harness_->kernel().ReadDevice(state.devices(0).image_path(), 0, 4096).ok())
      << "image reads fail after overflow";
  Release(*harness_, s.id());
}

TEST_F(LifecycleTest, ReleaseIsStreamedToWatchers) {
  Attach(*harness_, kDev);
  v1::Snapshot s = CreateSnapshot(*harness_, {kDev}, 64 * kMiB);
  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::WatchSnapshotEventsRequest watch_request;
  auto watcher = harness_->agent().WatchSnapshotEvents(&watch_context, watch_request);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Release(*harness_, s.id());
  v1::SnapshotEvent event;
  bool released = false;
  while (!released && watcher->Read(&event)) released = event.has_released();
  EXPECT_TRUE(released);
  watch_context.TryCancel();
}

}  // namespace
}  // namespace cbt::testing
