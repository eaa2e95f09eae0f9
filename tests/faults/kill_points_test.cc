// kill -9 of the daemon at every step of the snapshot lifecycle. The blksnap emulator process
// (the "kernel") SIGKILLs the daemon right after executing a chosen ioctl, before answering it,
// so the daemon dies exactly between two kernel calls; then the daemon is started again with the
// same state directory. The orphan policy is in agent/blksnap/blksnap_backend.h ("Orphans") and
// docs/RELIABILITY.md ("Faults (blksnap emulator)").
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "blksnap/control.h"
#include "blksnap/remote_kernel.h"
#include "fault_fixture.h"

namespace cbt::testing {
namespace {

// The steps every kill test shares: two tracked devices with data, then a CreateSnapshot of both
// that the emulator interrupts with SIGKILL after the `nth` ioctl of `kind`.
class KillPointTest : public FaultTest {
 protected:
  void PrepareTwoDevices() {
    AttachAll({kDevA, kDevB});
    Write(kDevA, 0, Pattern(4096, 1));
    Write(kDevA, 2 * kMiB, Pattern(8192, 2));
    Write(kDevB, 1 * kMiB, Pattern(4096, 3));
  }

  // CreateSnapshot of A and B, killed after the `nth` ioctl of `kind`. Returns what the
  // emulated kernel holds right after the kill.
  std::vector<blksnap::emulator::EmulatorClient::SnapshotView> CreateKilledAt(IoctlKind kind,
                                                                            uint64_t nth = 1) {
    ArmKill(kind, nth);
    grpc::Status status = TryCreateSnapshot(h(), {kDevA, kDevB}, 64 * kMiB, "");
    EXPECT_FALSE(status.ok()) << "CreateSnapshot answered although the daemon was killed";
    ExpectKilledByEmulator();
    auto views = h().kernel().ListSnapshots();
    EXPECT_TRUE(views.ok()) << views.status();
    return views.ok() ? *views : std::vector<blksnap::emulator::EmulatorClient::SnapshotView>{};
  }

  // The devices keep working while no agent runs; the kernel tracks these writes.
  void WriteWhileDown() {
    Write(kDevA, 4 * kMiB, Pattern(4096, 4));
    Write(kDevB, 4 * kMiB, Pattern(4096, 5));
  }

  // After the restart: the orphan is gone from the kernel, trackers are known with their
  // generation, every change is reported, a full cycle works and no byte is lost.
  void ExpectRecoveredWithoutOrphans(const std::string& orphan) {
    EXPECT_NE(RestartLog().find("released orphan snapshot " + orphan), std::string::npos)
        << RestartLog();
    ExpectSnapshots({});
    ExpectTrackers({kDevA, kDevB});
    ExpectFullCycle({kDevA, kDevB});
    ExpectNoDataLost();
  }
};

TEST_P(KillPointTest, KilledAfterCreate) {
  PrepareTwoDevices();
  auto kernel = CreateKilledAt(IoctlKind::kSnapshotCreate);
  // The kernel made the snapshot; the daemon died before it learned the id.
  ASSERT_EQ(kernel.size(), 1u);
  EXPECT_FALSE(kernel[0].taken);
  EXPECT_TRUE(kernel[0].devices.empty());
  WriteWhileDown();
  Restart();
  ExpectRecoveredWithoutOrphans(kernel[0].id);
}

TEST_P(KillPointTest, KilledAfterFirstAdd) {
  PrepareTwoDevices();
  auto kernel = CreateKilledAt(IoctlKind::kSnapshotAdd);
  // A is in the snapshot, B is not: the snapshot holds A until someone destroys it.
  ASSERT_EQ(kernel.size(), 1u);
  EXPECT_FALSE(kernel[0].taken);
  EXPECT_EQ(kernel[0].devices, (std::vector<std::pair<uint32_t, uint32_t>>{{8, 16}}));
  WriteWhileDown();
  Restart();
  ExpectRecoveredWithoutOrphans(kernel[0].id);
}

TEST_P(KillPointTest, KilledAfterTake) {
  PrepareTwoDevices();
  auto kernel = CreateKilledAt(IoctlKind::kSnapshotTake);
  // Taken, with images, but never reported to the caller: an orphan all the same.
  ASSERT_EQ(kernel.size(), 1u);
  EXPECT_TRUE(kernel[0].taken);
  EXPECT_EQ(kernel[0].devices.size(), 2u);
  WriteWhileDown();
  Restart();
  // The orphan's take moved the changes number on; the extents since the caller's base still
  // cover every write before and after it.
  EXPECT_GT(Info(h(), kDevA).changes_number(), base_[kDevA].changes);
  ExpectRecoveredWithoutOrphans(kernel[0].id);
}

TEST_P(KillPointTest, KilledDuringReadCbtMapStreamKeepsTheCompleteSnapshotAndItsWatcher) {
  AttachAll({kDevA, kDevBig});
  Write(kDevA, 0, Pattern(4096, 1));
  Write(kDevBig, 0, Pattern(4096, 2));
  Write(kDevBig, 20 * kGiB, Pattern(4096, 3));
  // A complete snapshot held across the crash (its take froze the maps read below); 4 MiB of
  // diff storage (2 MiB reserved) so that it can be made to overflow afterwards.
  v1::Snapshot held = CreateSnapshot(h(), {kDevA, kDevBig}, 4 * kMiB);

  // The map of the big device is streamed in two chunks; the daemon dies after reading the
  // second slice from the kernel.
  ArmKill(IoctlKind::kCbtMap, 2);
  size_t chunks = 0;
  grpc::Status status = DrainReadCbtMap(h(), kDevBig, &chunks);
  EXPECT_FALSE(status.ok());
  EXPECT_LE(chunks, 1u);
  ExpectKilledByEmulator();
  Restart();

  ExpectSnapshots({held.id()});
  ExpectTrackers({kDevA, kDevBig});
  std::vector<uint8_t> map = ReadMap(h(), kDevBig);
  ASSERT_EQ(map.size(), 32 * kGiB / kBlock);
  EXPECT_NE(map[0], 0);
  EXPECT_NE(map[20 * kGiB / kBlock], 0);

  // The restarted agent watches the held snapshot again: its overflow arrives as an event.
  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::WatchSnapshotEventsRequest watch_request;
  watch_request.set_snapshot_id(held.id());
  auto watcher = h().agent().WatchSnapshotEvents(&watch_context, watch_request);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the stream subscribe
  Write(kDevA, 16 * kMiB, Pattern(8 * kMiB, 4));
  v1::SnapshotEvent event;
  bool corrupted = false;
  while (!corrupted && watcher->Read(&event)) corrupted = event.has_corrupted();
  EXPECT_TRUE(corrupted) << "no corrupted event from the restarted watcher";
  watch_context.TryCancel();
  Release(h(), held.id());

  ExpectFullCycle({kDevA, kDevBig});
  ExpectNoDataLost();
}

TEST_P(KillPointTest, KilledDuringGetChangedExtents) {
  AttachAll({kDevA, kDevB});
  Write(kDevA, 0, Pattern(4096, 1));
  Write(kDevB, 0, Pattern(4096, 2));
  v1::Snapshot held = CreateSnapshot(h(), {kDevA, kDevB}, 64 * kMiB);

  ArmKill(IoctlKind::kCbtMap);
  ExtentsResult r = Extents(h(), kDevA, base_[kDevA].generation, base_[kDevA].changes);
  EXPECT_FALSE(r.status.ok());
  ExpectKilledByEmulator();
  Write(kDevA, 6 * kMiB, Pattern(4096, 3));
  Restart();

  ExpectSnapshots({held.id()});
  ExpectTrackers({kDevA, kDevB});
  // The same call again answers in full: the map of the held snapshot's take.
  ExtentsResult again = Extents(h(), kDevA, base_[kDevA].generation, base_[kDevA].changes);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.extents, (std::vector<std::pair<uint64_t, uint64_t>>{{0, kBlock}}));
  Release(h(), held.id());
  ExpectFullCycle({kDevA, kDevB});
  ExpectNoDataLost();
}

TEST_P(KillPointTest, KilledDuringRelease) {
  AttachAll({kDevA, kDevB});
  Write(kDevA, 0, Pattern(4096, 1));
  v1::Snapshot held = CreateSnapshot(h(), {kDevA, kDevB}, 64 * kMiB);

  ArmKill(IoctlKind::kSnapshotDestroy);
  EXPECT_FALSE(TryRelease(h(), held.id()).ok());
  ExpectKilledByEmulator();
  // The kernel destroyed it; the agent died before forgetting its record.
  EXPECT_TRUE(KernelSnapshotIds().empty());
  Restart();

  EXPECT_NE(RestartLog().find(held.id()), std::string::npos) << RestartLog();
  ExpectSnapshots({});
  ExpectTrackers({kDevA, kDevB});
  EXPECT_EQ(TryRelease(h(), held.id()).error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectFullCycle({kDevA, kDevB});
  ExpectNoDataLost();
}

// Snapshots made by another tool are listed (known_to_agent = false) and never released by the
// agent; with two unexplained snapshots an id-less orphan cannot be told apart and nothing is
// released.
TEST_P(KillPointTest, ForeignSnapshotsAreOnlyListed) {
  PrepareTwoDevices();
  std::unique_ptr<blksnap::Kernel> tool_kernel = blksnap::NewRemoteKernel(h().kernel_socket());
  auto tool = blksnap::Control::Open(*tool_kernel, GetParam().control_device);
  ASSERT_TRUE(tool.ok()) << tool.status();
  Uuid foreign;
  ASSERT_EQ((*tool)->Create(64 * kMiB / 512, h().diff_dir(), &foreign), 0);

  // An orphan next to a foreign snapshot that predates the intent: only the orphan goes.
  auto kernel = CreateKilledAt(IoctlKind::kSnapshotCreate);
  ASSERT_EQ(kernel.size(), 2u);
  Restart();
  EXPECT_EQ(KernelSnapshotIds(), std::set<std::string>{foreign.ToString()});
  EXPECT_EQ(AgentSnapshots(), (std::map<std::string, bool>{{foreign.ToString(), false}}));

  // Killed after CREATE again, and another tool makes a snapshot while no agent runs: two
  // candidates, so the agent releases neither and says so.
  kernel = CreateKilledAt(IoctlKind::kSnapshotCreate);
  Uuid foreign_while_down;
  ASSERT_EQ((*tool)->Create(64 * kMiB / 512, h().diff_dir(), &foreign_while_down), 0);
  Restart();
  EXPECT_NE(RestartLog().find("cannot tell its own"), std::string::npos) << RestartLog();
  std::set<std::string> kernel_ids = KernelSnapshotIds();
  EXPECT_EQ(kernel_ids.size(), 3u);
  std::map<std::string, bool> listed = AgentSnapshots();
  EXPECT_EQ(listed.size(), 3u);
  for (const auto& [id, known] : listed) {
    EXPECT_FALSE(known) << id;
    EXPECT_EQ(kernel_ids.count(id), 1u) << id;
  }
  EXPECT_EQ(listed.count(foreign.ToString()), 1u);
  EXPECT_EQ(listed.count(foreign_while_down.ToString()), 1u);

  // The operator's way out: an explicit release of each one.
  for (const auto& [id, known] : listed) Release(h(), id);
  ExpectSnapshots({});
  ExpectTrackers({kDevA, kDevB});
  ExpectFullCycle({kDevA, kDevB});
  ExpectNoDataLost();
}

INSTANTIATE_TEST_SUITE_P(Flavours, KillPointTest, ::testing::ValuesIn(AllFlavours()),
                         FlavourCaseName);

}  // namespace
}  // namespace cbt::testing
