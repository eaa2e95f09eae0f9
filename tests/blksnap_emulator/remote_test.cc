// The out-of-process path: the blksnap-emulator binary, driven through NewRemoteKernel (the
// agent's seam, ioctl arguments read from this process's memory by the emulator) and
// EmulatorClient (test control), including the kernel state surviving a "daemon restart".
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "blksnap/remote_kernel.h"
#include "core/generation_id.h"
#include "gtest/gtest.h"
#include "tests/blksnap_emulator/emulated_kernel.h"
#include "tests/blksnap_emulator/emulator_client.h"
#include "tests/blksnap_emulator/test_util.h"

namespace cbt::blksnap::emulator {
namespace {

using testing::Driver;
using testing::ImagePath;
using testing::kMiB;
using testing::Pattern;
using testing::TempDir;

constexpr char kDev[] = "/dev/loop0";

class RemoteEmulatorTest : public ::testing::TestWithParam<Flavour> {
 protected:
  void SetUp() override {
    socket_ = temp_.path() + "/emulator.sock";
    auto process = EmulatorProcess::Start(
        CBT_BLKSNAP_EMULATOR_BINARY,
        {"--socket=" + socket_, std::string("--flavour=") + FlavourName(GetParam()),
         "--kernel_release=6.1.0-50-amd64", "--backing_dir=" + temp_.Subdir("backing"),
         "--device=/dev/loop0:64M:7:0", "--device=/dev/vdb:16M",
         "--symlink=/dev/disk/by-id/test-disk:../../loop0"});
    ASSERT_TRUE(process.ok()) << process.status();
    process_ = std::move(*process);
    auto client = EmulatorClient::Connect(socket_);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::make_unique<EmulatorClient>(std::move(*client));
  }

  TempDir temp_;
  std::string socket_;
  std::unique_ptr<EmulatorProcess> process_;
  std::unique_ptr<EmulatorClient> client_;
};

std::string ParamName(const ::testing::TestParamInfo<Flavour>& info) {
  return testing::FlavourTestName(info.param);
}

INSTANTIATE_TEST_SUITE_P(AllFlavours, RemoteEmulatorTest,
                         ::testing::Values(Flavour::kLk615, Flavour::kV7, Flavour::kVal7),
                         ParamName);

TEST_P(RemoteEmulatorTest, TakeCopyOnWriteReadImageAndSurviveADaemonRestart) {
  const Flavour flavour = GetParam();
  const std::string storage = temp_.Subdir("storage");
  const std::string old_data = Pattern(200 * 1024, 1);  // several messages

  blksnap_uuid id{};
  {
    std::unique_ptr<Kernel> kernel = NewRemoteKernel(socket_);
    FileStatus status;
    ASSERT_EQ(kernel->Stat("/dev/disk/by-id/test-disk", &status), 0);
    EXPECT_TRUE(status.is_block_device);
    EXPECT_EQ(status.rdev_major, 7u);
    EXPECT_EQ(status.rdev_minor, 0u);
    ASSERT_EQ(kernel->Stat("/dev/vdb", &status), 0);
    EXPECT_EQ(status.rdev_major, 7u);
    EXPECT_EQ(status.rdev_minor, 1u);  // auto-numbered
    ASSERT_EQ(kernel->Stat(storage, &status), 0);
    EXPECT_TRUE(status.is_directory);
    std::string text;
    ASSERT_EQ(kernel->RealPath("/dev/disk/by-id/test-disk", &text), 0);
    EXPECT_EQ(text, kDev);
    ASSERT_EQ(kernel->KernelRelease(&text), 0);
    EXPECT_EQ(text, "6.1.0-50-amd64");

    Driver driver(kernel.get(), flavour);
    blksnap_version version{};
    ASSERT_EQ(driver.Version(&version), 0);
    EXPECT_EQ(version.major, flavour == Flavour::kVal7 ? 7 : 2);
    ASSERT_EQ(driver.Attach(kDev), 0);
    ASSERT_TRUE(client_->WriteDevice(kDev, 1 * kMiB, old_data).ok());  // tracked
    ASSERT_EQ(driver.Create(storage, 2097152, &id), 0);
    ASSERT_EQ(driver.SnapshotAdd(kDev, id), 0);
    ASSERT_EQ(driver.Take(id), 0);
    blksnap_snapshotinfo info{};
    ASSERT_EQ(driver.SnapshotInfo(kDev, &info), 0);
    EXPECT_EQ("/dev/" + std::string(reinterpret_cast<const char*>(info.image)),
              ImagePath(flavour, 7, 0));
    uint64_t size = 0;
    ASSERT_EQ(driver.BlockSize64(ImagePath(flavour, 7, 0), &size), 0);
    EXPECT_EQ(size, 64 * kMiB);

    // Copy-on-write through the emulator process.
    const std::string new_data = Pattern(200 * 1024, 2);
    ASSERT_TRUE(client_->WriteDevice(kDev, 1 * kMiB, new_data).ok());
    auto image = client_->ReadDevice(ImagePath(flavour, 7, 0), 1 * kMiB, old_data.size());
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_TRUE(*image == old_data);
    auto origin = client_->ReadDevice(kDev, 1 * kMiB, new_data.size());
    ASSERT_TRUE(origin.ok());
    EXPECT_TRUE(*origin == new_data);

    // CBT read through user pointers into this process.
    std::vector<uint8_t> map;
    ASSERT_EQ(driver.CbtMapAll(kDev, &map), 0);
    ASSERT_EQ(map.size(), 1024u);
    EXPECT_EQ(map[16], 1);  // written before the take
    EXPECT_EQ(map[19], 1);
    EXPECT_EQ(map[20], 0);

    // A blocking WAIT_EVENT does not hold up other calls.
    std::atomic<bool> waiter_done{false};
    std::thread waiter([&] {
      blksnap_snapshot_event event;
      Driver other(kernel.get(), flavour);
      EXPECT_EQ(other.WaitEvent(id, 1000, &event), ENOENT);  // capped at kMaxWaitEventMs
      waiter_done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    blksnap_cbtinfo cbt{};
    EXPECT_EQ(driver.CbtInfo(kDev, &cbt), 0);
    EXPECT_FALSE(waiter_done);  // the call did not queue up behind the waiter
    waiter.join();
    EXPECT_EQ(cbt.changes_number, 1);
  }  // the "daemon" exits: its connections close and its fds are dropped

  // The restarted daemon finds the kernel state as it was.
  std::unique_ptr<Kernel> kernel = NewRemoteKernel(socket_);
  Driver driver(kernel.get(), flavour);
  std::vector<blksnap_uuid> ids;
  uint32_t count = 0;
  ASSERT_EQ(driver.Collect(4, true, &ids, &count), 0);
  ASSERT_EQ(count, 1u);
  EXPECT_EQ(testing::UuidText(ids[0]), testing::UuidText(id));
  blksnap_cbtinfo cbt{};
  ASSERT_EQ(driver.CbtInfo(kDev, &cbt), 0);
  EXPECT_EQ(cbt.changes_number, 1);
  EXPECT_EQ(driver.Attach(kDev), EALREADY);
  auto image = client_->ReadDevice(ImagePath(flavour, 7, 0), 1 * kMiB, old_data.size());
  ASSERT_TRUE(image.ok());
  EXPECT_TRUE(*image == old_data);
  ASSERT_EQ(driver.Destroy(id), 0);
  FileStatus status;
  EXPECT_EQ(kernel->Stat(ImagePath(flavour, 7, 0), &status), ENOENT);
}

TEST_P(RemoteEmulatorTest, ControlOperationsAndOverflowEvent) {
  const Flavour flavour = GetParam();
  std::unique_ptr<Kernel> kernel = NewRemoteKernel(socket_);
  Driver driver(kernel.get(), flavour);
  ASSERT_TRUE(client_->AddDevice("/dev/vdc", 8 * kMiB, 252, 32).ok());
  EXPECT_EQ(client_->AddDevice("/dev/vdc", 8 * kMiB, 252, 33).code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(client_->AddSymlink("/dev/mapper/vg-root", "/dev/vdc").ok());
  const std::string mounted = temp_.Subdir("on-vdc");
  ASSERT_TRUE(client_->AddMount(mounted, "/dev/vdc").ok());
  FileStatus status;
  ASSERT_EQ(kernel->Stat(mounted, &status), 0);
  EXPECT_EQ(status.dev_major, 252u);
  EXPECT_EQ(status.dev_minor, 32u);
  ASSERT_TRUE(client_->ResizeDevice("/dev/mapper/vg-root", 16 * kMiB).ok());
  uint64_t size = 0;
  ASSERT_EQ(driver.BlockSize64("/dev/vdc", &size), 0);
  EXPECT_EQ(size, 16 * kMiB);

  // Overflow: 4 MiB limit = 8 usable chunks; 3 MiB of overwrites need 12.
  ASSERT_EQ(driver.Attach(kDev), 0);
  blksnap_uuid id{};
  ASSERT_EQ(driver.Create(temp_.Subdir("storage"), 8192, &id), 0);
  ASSERT_EQ(driver.SnapshotAdd(kDev, id), 0);
  ASSERT_EQ(driver.Take(id), 0);
  std::thread writer([&] { EXPECT_TRUE(client_->WriteDevice(kDev, 0, Pattern(3 * kMiB, 9)).ok()); });
  // Polls in short waits (the events come while the writer runs) for up to 10 s: a loaded or
  // sanitized run can be slow, and only a missing event is a failure.
  auto next_event = [&](blksnap_snapshot_event* event) {
    int error = ENOENT;
    for (int i = 0; i < 400 && error == ENOENT; ++i) error = driver.WaitEvent(id, 25, event);
    return error;
  };
  blksnap_snapshot_event event;
  const int first_error = next_event(&event);
  const uint32_t first_code = event.code;
  writer.join();  // before any assertion can return with the thread still joinable
  ASSERT_EQ(first_error, 0);
  if (flavour == Flavour::kLk615) {
    EXPECT_EQ(first_code, kEventNoSpace);
    ASSERT_EQ(next_event(&event), 0);
  }
  EXPECT_EQ(event.code, kEventCorrupted);
  blksnap_event_corrupted corrupted;
  std::memcpy(&corrupted, event.data, sizeof(corrupted));
  EXPECT_EQ(corrupted.dev_id_mj, 7u);
  EXPECT_EQ(corrupted.err_code, 28);
  blksnap_snapshotinfo info{};
  ASSERT_EQ(driver.SnapshotInfo(kDev, &info), 0);
  EXPECT_EQ(info.error_code, -28);
  EXPECT_EQ(client_->ReadDevice(ImagePath(flavour, 7, 0), 0, 512).status().code(),
            absl::StatusCode::kDataLoss);
  ASSERT_EQ(driver.Destroy(id), 0);

  // Hot removal through the client.
  ASSERT_TRUE(client_->RemoveDevice("/dev/vdc").ok());
  EXPECT_EQ(kernel->Stat("/dev/vdc", &status), ENOENT);
  EXPECT_EQ(client_->RemoveDevice("/dev/vdc").code(), absl::StatusCode::kNotFound);
}

// Fault injection: the emulator SIGKILLs the client right after executing the armed ioctl (here
// the first SNAPSHOTADD, a filter control call whose decoding differs per flavour), instead of
// answering; the kernel state keeps what that call did, and nothing after it ran.
TEST_P(RemoteEmulatorTest, KillsTheClientRightAfterTheArmedIoctl) {
  const Flavour flavour = GetParam();
  const std::string storage = temp_.Subdir("storage");
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char c;
    if (::read(go[0], &c, 1) != 1) ::_exit(1);
    std::unique_ptr<Kernel> kernel = NewRemoteKernel(socket_);
    Driver driver(kernel.get(), flavour);
    blksnap_uuid id{};
    blksnap_cbtinfo cbt{};
    if (driver.Attach(kDev) != 0 || driver.CbtInfo(kDev, &cbt) != 0 ||
        driver.Create(storage, 2097152, &id) != 0) {
      ::_exit(2);
    }
    driver.SnapshotAdd(kDev, id);  // killed here
    driver.Take(id);
    ::_exit(3);
  }
  ASSERT_TRUE(client_->ArmKill(IoctlKind::kSnapshotAdd, 1, child).ok());
  EXPECT_EQ(::write(go[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ::close(go[0]);
  ::close(go[1]);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  auto state = client_->GetKillState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_TRUE(state->fired);
  EXPECT_EQ(state->killed_pid, child);
  EXPECT_EQ(state->counted, 1u);
  auto snapshots = client_->ListSnapshots();
  ASSERT_TRUE(snapshots.ok()) << snapshots.status();
  ASSERT_EQ(snapshots->size(), 1u);
  EXPECT_FALSE((*snapshots)[0].taken) << "TAKE never ran";
  EXPECT_EQ((*snapshots)[0].devices, (std::vector<std::pair<uint32_t, uint32_t>>{{7, 0}}));

  // Disarmed after firing: this process's calls go through.
  std::unique_ptr<Kernel> kernel = NewRemoteKernel(socket_);
  Driver driver(kernel.get(), flavour);
  blksnap_uuid id{};
  auto parsed = ParseUuid((*snapshots)[0].id);
  ASSERT_TRUE(parsed.ok());
  std::memcpy(id.b, parsed->bytes.data(), sizeof(id.b));
  ASSERT_EQ(driver.Destroy(id), 0);
  snapshots = client_->ListSnapshots();
  ASSERT_TRUE(snapshots.ok());
  EXPECT_TRUE(snapshots->empty());
  EXPECT_EQ(client_->ArmKill(static_cast<IoctlKind>(kIoctlKindCount), 1).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(IoctlKindTest, NamesRoundTrip) {
  for (uint32_t i = 0; i < kIoctlKindCount; ++i) {
    const auto kind = static_cast<IoctlKind>(i);
    auto parsed = ParseIoctlKind(IoctlKindName(kind));
    ASSERT_TRUE(parsed.ok()) << IoctlKindName(kind);
    EXPECT_EQ(*parsed, kind);
  }
  EXPECT_FALSE(ParseIoctlKind("snapshot_take").ok());
}

TEST(RemoteKernelTest, FailsWithEnotconnWithoutAnEmulator) {
  TempDir temp;
  std::unique_ptr<Kernel> kernel = NewRemoteKernel(temp.path() + "/nothing.sock");
  int fd = -1;
  EXPECT_EQ(kernel->Open(kDev, O_RDONLY, &fd), ENOTCONN);
  FileStatus status;
  EXPECT_EQ(kernel->Stat(kDev, &status), ENOTCONN);
  EXPECT_FALSE(EmulatorClient::Connect(temp.path() + "/nothing.sock").ok());
}

TEST(EmulatorProcessTest, ReportsABadCommandLine) {
  TempDir temp;
  auto process = EmulatorProcess::Start(
      CBT_BLKSNAP_EMULATOR_BINARY, {"--socket=" + temp.path() + "/s", "--flavour=v6"});
  EXPECT_FALSE(process.ok());
  EXPECT_FALSE(EmulatorProcess::Start(CBT_BLKSNAP_EMULATOR_BINARY, {"--flavour=v7"}).ok());
  EXPECT_FALSE(EmulatorProcess::Start(CBT_BLKSNAP_EMULATOR_BINARY,
                                      {"--socket=" + temp.path() + "/s", "--kill_after=take"})
                   .ok());
  EXPECT_FALSE(EmulatorProcess::Start(CBT_BLKSNAP_EMULATOR_BINARY,
                                      {"--socket=" + temp.path() + "/s", "--kill_after=nope:1"})
                   .ok());
  auto armed = EmulatorProcess::Start(
      CBT_BLKSNAP_EMULATOR_BINARY, {"--socket=" + temp.path() + "/s", "--kill_after=take:2"});
  ASSERT_TRUE(armed.ok()) << armed.status();
  auto client = EmulatorClient::Connect(temp.path() + "/s");
  ASSERT_TRUE(client.ok());
  auto state = client->GetKillState();
  ASSERT_TRUE(state.ok());
  EXPECT_FALSE(state->fired);
}

}  // namespace
}  // namespace cbt::blksnap::emulator
