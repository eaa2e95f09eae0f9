#include "fault_fixture.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace cbt::testing {

std::vector<FlavourCase> AllFlavours() {
  return {FlavourCase{"lk6.15", "6.15.0", "/dev/blksnap-control"},
          FlavourCase{"v7", "6.9.0", "/dev/blksnap-control"},
          FlavourCase{"val7", "6.1.0-50-amd64", "/dev/veeamblksnap"}};
}

std::string FlavourCaseName(const ::testing::TestParamInfo<FlavourCase>& info) {
  std::string name = info.param.flavour;
  for (char& c : name) {
    if (c == '.') c = '_';
  }
  return name;
}

void FaultTest::SetUp() {
  harness_ = std::make_unique<AgentHarness>(
      GetParam().flavour, GetParam().kernel_release,
      std::vector<EmulatedDevice>{{kDevA, 64 * kMiB, 8, 16},
                                  {kDevB, 64 * kMiB, 8, 32},
                                  {kDevBig, 32 * kGiB, 8, 48}});
  ASSERT_TRUE(harness_->StartEmulator());
  ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();
}

void FaultTest::AttachAll(const std::vector<std::string>& devices) {
  for (const std::string& device : devices) {
    Attach(h(), device);
    v1::CbtInfo info = Info(h(), device);
    base_[device] = Base{info.generation_id(), info.changes_number()};
    next_offset_[device] = 32 * kMiB;
  }
}

void FaultTest::Write(const std::string& device, uint64_t offset, const std::string& data) {
  for (const Written& earlier : written_[device]) {
    ASSERT_TRUE(offset + data.size() <= earlier.offset ||
                earlier.offset + earlier.data.size() <= offset)
        << "test bug: overlapping writes to " << device;
  }
  ASSERT_TRUE(h().kernel().WriteDevice(device, offset, data).ok());
  written_[device].push_back(Written{offset, data});
}

void FaultTest::ArmKill(IoctlKind kind, uint64_t nth) {
  ASSERT_TRUE(h().kernel().ArmKill(kind, nth).ok());
}

void FaultTest::ExpectKilledByEmulator() {
  int status = -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (status == -1 && std::chrono::steady_clock::now() < deadline) {
    status = h().agent_process().ExitedStatus();
    if (status == -1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(status, -1) << "the daemon is still running";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  auto state = h().kernel().GetKillState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_TRUE(state->fired);
  EXPECT_GT(state->killed_pid, 0);
}

void FaultTest::Restart() {
  h().StopAgent(SIGKILL, 5000);  // reaps, if ExpectKilledByEmulator did not
  restart_log_offset_ = h().AgentLog().size();
  ASSERT_TRUE(h().StartAgent()) << h().AgentLog();
}

std::set<std::string> FaultTest::KernelSnapshotIds() {
  auto views = h().kernel().ListSnapshots();
  EXPECT_TRUE(views.ok()) << views.status();
  std::set<std::string> ids;
  if (views.ok()) {
    for (const auto& view : *views) ids.insert(view.id);
  }
  return ids;
}

std::map<std::string, bool> FaultTest::AgentSnapshots() {
  v1::ListSnapshotsResponse list;
  grpc::Status status = h().agent().ListSnapshots(Deadline().get(), {}, &list);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::map<std::string, bool> out;
  for (const v1::Snapshot& s : list.snapshots()) out[s.id()] = s.known_to_agent();
  return out;
}

void FaultTest::ExpectSnapshots(const std::set<std::string>& ids) {
  EXPECT_EQ(KernelSnapshotIds(), ids) << "the emulated kernel's snapshots";
  std::map<std::string, bool> listed = AgentSnapshots();
  std::set<std::string> listed_ids;
  for (const auto& [id, known] : listed) {
    listed_ids.insert(id);
    EXPECT_TRUE(known) << "snapshot " << id << " listed with known_to_agent=false";
  }
  EXPECT_EQ(listed_ids, ids) << "the agent's ListSnapshots";
}

void FaultTest::ExpectTrackers(const std::vector<std::string>& devices) {
  v1::ListTrackersResponse list;
  grpc::Status status = h().agent().ListTrackers(Deadline().get(), {}, &list);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::set<std::string> listed;
  for (const auto& t : list.trackers()) listed.insert(t.resolved_path());
  EXPECT_EQ(listed, std::set<std::string>(devices.begin(), devices.end()));
  for (const std::string& device : devices) {
    v1::CbtInfo info = Info(h(), device);
    EXPECT_EQ(info.generation_id(), base_[device].generation)
        << device << ": the kernel's CBT generation survives the daemon";
    EXPECT_GE(info.changes_number(), base_[device].changes);
  }
}

void FaultTest::ExpectChangesReported(const std::string& device) {
  const Base& base = base_[device];
  ExtentsResult r = Extents(h(), device, base.generation, base.changes);
  ASSERT_TRUE(r.status.ok()) << device << ": " << r.status.error_message();
  EXPECT_TRUE(r.last.complete());
  for (const Written& w : written_[device]) {
    const uint64_t first = w.offset / kBlock * kBlock;
    const uint64_t end = w.offset + w.data.size();
    bool covered = false;
    for (const auto& [offset, length] : r.extents) {
      if (offset <= first && end <= offset + length) covered = true;
    }
    EXPECT_TRUE(covered) << device << ": the write at " << w.offset << " (" << w.data.size()
                         << " bytes) is missing from the changed extents";
  }
}

void FaultTest::ExpectFullCycle(const std::vector<std::string>& devices) {
  std::map<std::string, std::pair<uint64_t, std::string>> fresh;
  for (const std::string& device : devices) {
    const uint64_t offset = next_offset_[device];
    next_offset_[device] += 2 * kBlock;
    std::string data = Pattern(4096, 1000 + seed_++);
    Write(device, offset, data);
    fresh[device] = {offset, std::move(data)};
  }
  v1::CreateSnapshotResponse created;
  grpc::Status status = TryCreateSnapshot(h(), devices, 64 * kMiB, "", &created);
  ASSERT_TRUE(status.ok()) << "CreateSnapshot: " << status.error_message();
  const v1::Snapshot& s = created.snapshot();
  ASSERT_EQ(s.devices_size(), static_cast<int>(devices.size()));
  EXPECT_EQ(s.state(), v1::SNAPSHOT_STATE_ACTIVE);
  for (int i = 0; i < s.devices_size(); ++i) {
    const auto& [offset, data] = fresh[s.devices(i).device()];
    auto image = h().kernel().ReadDevice(s.devices(i).image_path(), offset, data.size());
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_TRUE(*image == data) << "the image of " << s.devices(i).device()
                                << " holds the bytes written before the take";
  }
  for (const std::string& device : devices) ExpectChangesReported(device);
  Release(h(), s.id());
  ExpectSnapshots({});
}

void FaultTest::ExpectNoDataLost() {
  for (const auto& [device, writes] : written_) {
    for (const Written& w : writes) {
      auto data = h().kernel().ReadDevice(device, w.offset, w.data.size());
      ASSERT_TRUE(data.ok()) << data.status();
      EXPECT_TRUE(*data == w.data) << device << ": bytes at " << w.offset << " differ";
    }
  }
}

grpc::Status DrainReadCbtMap(AgentHarness& h, const std::string& device, size_t* chunks) {
  v1::ReadCbtMapRequest request;
  request.set_device(device);
  auto context = Deadline(20);
  auto reader = h.agent().ReadCbtMap(context.get(), request);
  std::vector<v1::CbtMapChunk> messages;
  grpc::Status status = ReadAll(reader, &messages);
  *chunks = messages.size();
  return status;
}

}  // namespace cbt::testing
