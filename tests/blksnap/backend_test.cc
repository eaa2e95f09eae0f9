// The blksnap backend against the uapi emulator, every test for each of the three flavours.
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "backend/backend.h"
#include "blksnap/blksnap_backend.h"
#include "blksnap/flavour.h"
#include "blksnap/uapi.h"
#include "blksnap_emulator/emulated_kernel.h"
#include "core/cbt_map.h"
#include "core/changed_extents.h"
#include "core/tracking_geometry.h"
#include "gtest/gtest.h"
#include "state/state_store.h"
#include "test_support.h"

namespace cbt::blksnap {
namespace {

using ::cbt::agent::Backend;
using ::cbt::agent::DeviceNumber;
using ::cbt::agent::DiffStorageSpec;
using ::cbt::agent::SectorRange;
using ::cbt::agent::SnapshotEvent;
using ::cbt::agent::SnapshotState;
using ::cbt::agent::StateStore;
using ::cbt::agent::TrackerState;
using ::cbt::blksnap::emulator::EmulatedKernel;
using ::cbt::blksnap::emulator::EmulatorOptions;
using namespace ::cbt::blksnap::testing;  // NOLINT

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kBlock = 64 * kKiB;  // default CBT block for devices up to 128 GiB
// nbd's major: unlikely to be the device holding the host's temporary directory.
constexpr uint32_t kMajor = 43;

const char kDevA[] = "/dev/emu-a";
const char kDevB[] = "/dev/emu-b";
const char kDevC[] = "/dev/emu-c";
const char kDevD[] = "/dev/emu-d";
const char kLinkA[] = "/dev/disk/by-id/emu-disk-a";
const char kLinkB[] = "/dev/disk/by-id/emu-disk-b";

struct FlavourCase {
  Flavour flavour;
  const char* kernel_release;
  const char* name;
};

void PrintTo(const FlavourCase& c, std::ostream* os) { *os << c.name; }

std::string Pattern(char c, size_t n) { return std::string(n, c); }

bool IsReleased(const SnapshotEvent& e, const Uuid& id) {
  return e.kind == SnapshotEvent::Kind::kReleased && e.snapshot_id == id;
}

class BlksnapBackendTest : public ::testing::TestWithParam<FlavourCase> {
 protected:
  void SetUp() override {
    root_ = MakeTempDir("cbt-blksnap-test");
    ASSERT_FALSE(root_.empty());
    diff_dir_ = root_ + "/diff";
    state_dir_ = root_ + "/state";
    ASSERT_EQ(::mkdir(diff_dir_.c_str(), 0700), 0);
    ASSERT_EQ(::mkdir((root_ + "/backing").c_str(), 0700), 0);

    EmulatorOptions options;
    options.flavour = GetParam().flavour;
    options.kernel_release = GetParam().kernel_release;
    options.backing_dir = root_ + "/backing";
    emu_ = std::make_shared<EmulatedKernel>(options);
    CBT_ASSERT_OK(emu_->AddDevice(kDevA, 64 * kMiB, kMajor, 0));
    CBT_ASSERT_OK(emu_->AddDevice(kDevB, 32 * kMiB, kMajor, 16));
    CBT_ASSERT_OK(emu_->AddDevice(kDevC, 16 * kMiB, kMajor, 32));
    CBT_ASSERT_OK(emu_->AddDevice(kDevD, 16 * kMiB, kMajor, 48));
    CBT_ASSERT_OK(emu_->AddSymlink(kLinkA, kDevA));
    CBT_ASSERT_OK(emu_->AddSymlink(kLinkB, kDevB));

    // The host's temporary directory must not look like one of the emulated devices.
    struct stat st;
    ASSERT_EQ(::stat(diff_dir_.c_str(), &st), 0);
    ASSERT_NE(major(st.st_dev), kMajor) << "pick another emulated major for this host";

    faults_ = std::make_shared<Faults>();
    backend_options_.event_wait_jiffies = 2;
    OpenBackend();
  }

  void TearDown() override {
    CloseBackend();
    raw_.reset();
    emu_.reset();
    RemoveTree(root_);
  }

  std::unique_ptr<Kernel> NewKernel() { return std::make_unique<ForwardingKernel>(emu_, faults_); }

  void OpenBackend() {
    absl::StatusOr<std::unique_ptr<StateStore>> state = StateStore::Open(state_dir_);
    CBT_ASSERT_OK(state);
    state_ = std::move(*state);
    absl::StatusOr<std::unique_ptr<Backend>> backend =
        NewBlksnapBackend(NewKernel(), backend_options_, &sink_, state_.get());
    CBT_ASSERT_OK(backend);
    backend_ = std::move(*backend);
  }

  void CloseBackend() {
    if (backend_) {
      backend_->Shutdown();
      backend_.reset();
    }
    state_.reset();
  }

  RawBlksnap& Raw() {
    if (!raw_) {
      raw_kernel_ = NewKernel();
      raw_ = std::make_unique<RawBlksnap>(*raw_kernel_, GetParam().flavour);
    }
    return *raw_;
  }

  std::vector<Uuid> KernelSnapshots() {
    std::vector<Uuid> ids;
    EXPECT_EQ(Raw().Collect(&ids), 0);
    return ids;
  }

  std::string ImagePathOf(uint32_t minor) const {
    return "/dev/" + ImageDiskName(GetParam().flavour, kMajor, minor);
  }

  DiffStorageSpec Diff(uint64_t limit = 1 * kGiB) const { return DiffStorageSpec{diff_dir_, limit}; }

  void Attach(const std::string& device) {
    bool already = false;
    CBT_ASSERT_OK(backend_->AttachTracker(device, &already));
  }

  std::vector<uint8_t> ReadMap(const std::string& device) {
    absl::StatusOr<CbtInfo> info = backend_->GetCbtInfo(device);
    EXPECT_TRUE(info.ok()) << info.status();
    if (!info.ok()) return {};
    std::vector<uint8_t> map(info->block_count);
    absl::Status status = backend_->ReadCbtMap(device, 0, map.size(), map.data());
    EXPECT_TRUE(status.ok()) << status;
    return map;
  }

  std::vector<ByteExtent> Changed(const std::string& device, uint8_t since) {
    absl::StatusOr<CbtInfo> info = backend_->GetCbtInfo(device);
    EXPECT_TRUE(info.ok()) << info.status();
    absl::StatusOr<TrackingGeometry> geometry = ChooseTrackingGeometry(info->capacity_bytes / 512);
    EXPECT_TRUE(geometry.ok());
    EXPECT_EQ(geometry->block_size(), info->block_size);
    EXPECT_EQ(geometry->block_count, info->block_count);
    const std::vector<uint8_t> map = ReadMap(device);
    return FindChangedExtents(map, *geometry, since, 0, 0).extents;
  }

  std::string ReadImage(const std::string& path, uint64_t offset, uint64_t length) {
    absl::StatusOr<std::string> data = emu_->ReadDevice(path, offset, length);
    EXPECT_TRUE(data.ok()) << path << ": " << data.status();
    return data.ok() ? *data : std::string();
  }

  std::string root_;
  std::string diff_dir_;
  std::string state_dir_;
  std::shared_ptr<EmulatedKernel> emu_;
  std::shared_ptr<Faults> faults_;
  BlksnapBackendOptions backend_options_;
  RecordingSink sink_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Kernel> raw_kernel_;
  std::unique_ptr<RawBlksnap> raw_;
};

// ---------------------------------------------------------------------------------------------
// Flavour detection

TEST_P(BlksnapBackendTest, DetectsTheEmulatedFlavour) {
  std::unique_ptr<Kernel> kernel = NewKernel();
  absl::StatusOr<FlavourChoice> choice = DetectFlavour(*kernel, "auto");
  CBT_ASSERT_OK(choice);
  EXPECT_EQ(choice->flavour, GetParam().flavour) << choice->reason;
  EXPECT_EQ(choice->control_device, ControlDevicePath(GetParam().flavour));
  EXPECT_FALSE(choice->module_version.empty());
  EXPECT_EQ(std::count(choice->module_version.begin(), choice->module_version.end(), '.'), 3);

  const agent::BackendDescription description = backend_->Describe();
  EXPECT_EQ(description.kind, agent::BackendKind::kBlksnap);
  EXPECT_EQ(description.blksnap_flavour, FlavourName(GetParam().flavour));
  EXPECT_EQ(description.control_device, ControlDevicePath(GetParam().flavour));
  EXPECT_EQ(description.module_version, choice->module_version);
  EXPECT_FALSE(description.reason.empty());
}

TEST_P(BlksnapBackendTest, ForcedFlavourOverridesDetection) {
  std::unique_ptr<Kernel> kernel = NewKernel();
  const std::string own = FlavourName(GetParam().flavour);
  absl::StatusOr<FlavourChoice> choice = DetectFlavour(*kernel, own);
  CBT_ASSERT_OK(choice);
  EXPECT_EQ(choice->flavour, GetParam().flavour);
  EXPECT_NE(choice->reason.find("forced"), std::string::npos) << choice->reason;

  if (GetParam().flavour == Flavour::kVal7) {
    // No /dev/blksnap-control on an out-of-tree system.
    CBT_EXPECT_CODE(DetectFlavour(*kernel, "lk6.15"), absl::StatusCode::kUnavailable);
  } else {
    // The other upstream numbering can be forced (e.g. a back-ported lk6.15 module)...
    const std::string other = GetParam().flavour == Flavour::kLk615 ? "v7" : "lk6.15";
    choice = DetectFlavour(*kernel, other);
    CBT_ASSERT_OK(choice);
    EXPECT_EQ(FlavourName(choice->flavour), other);
    // ...but val7 needs its own devices.
    CBT_EXPECT_CODE(DetectFlavour(*kernel, "val7"), absl::StatusCode::kUnavailable);
  }
  CBT_EXPECT_CODE(DetectFlavour(*kernel, "v6"), absl::StatusCode::kInvalidArgument);

  BlksnapBackendOptions options = backend_options_;
  options.forced_flavour = "nonsense";
  CBT_EXPECT_CODE(NewBlksnapBackend(NewKernel(), options, nullptr, nullptr),
                  absl::StatusCode::kInvalidArgument);
}

TEST_P(BlksnapBackendTest, NoBlksnapModule) {
  for (const char* path : {"/dev/blksnap-control", "/dev/veeamblksnap", "/dev/bdevfilter"}) {
    faults_->Hide(path);
  }
  std::unique_ptr<Kernel> kernel = NewKernel();
  absl::StatusOr<FlavourChoice> choice = DetectFlavour(*kernel, "auto");
  CBT_EXPECT_CODE(choice, absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(choice.status().message(), "not loaded"))
      << choice.status();
  CBT_EXPECT_CODE(NewBlksnapBackend(NewKernel(), backend_options_, nullptr, nullptr),
                  absl::StatusCode::kUnavailable);
}

// ---------------------------------------------------------------------------------------------
// The backup cycle

TEST_P(BlksnapBackendTest, FullBackupCycle) {
  bool already = true;
  absl::StatusOr<TrackerState> tracker = backend_->AttachTracker(kDevA, &already);
  CBT_ASSERT_OK(tracker);
  EXPECT_FALSE(already);
  EXPECT_EQ(tracker->device, kDevA);
  EXPECT_EQ(tracker->resolved_path, kDevA);
  EXPECT_EQ(tracker->number, (DeviceNumber{kMajor, 0}));
  EXPECT_EQ(tracker->capacity_bytes, 64 * kMiB);
  EXPECT_EQ(tracker->io_path, kDevA);
  EXPECT_TRUE(tracker->snapshot_id.empty());
  EXPECT_TRUE(tracker->image_path.empty());

  absl::StatusOr<CbtInfo> info0 = backend_->GetCbtInfo(kDevA);
  CBT_ASSERT_OK(info0);
  EXPECT_EQ(info0->capacity_bytes, 64 * kMiB);
  EXPECT_EQ(info0->block_size, kBlock);
  EXPECT_EQ(info0->block_count, 1024u);
  EXPECT_EQ(info0->changes_number, 0);
  EXPECT_FALSE(info0->generation_id.is_nil());

  // Writes before the first snapshot.
  CBT_ASSERT_OK(emu_->WriteDevice(kDevA, 0, Pattern('a', 4096)));
  CBT_ASSERT_OK(emu_->WriteDevice(kDevA, 10 * kMiB, Pattern('b', 8192)));

  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA}, Diff());
  CBT_ASSERT_OK(snap);
  EXPECT_FALSE(snap->id.is_nil());
  EXPECT_TRUE(snap->known_to_agent);
  EXPECT_FALSE(snap->corrupted);
  EXPECT_GT(snap->created_unix_nanos, 0);
  EXPECT_EQ(snap->diff_storage.path, diff_dir_);
  EXPECT_EQ(snap->diff_storage.limit_bytes, 1 * kGiB);
  ASSERT_EQ(snap->devices.size(), 1u);
  EXPECT_EQ(snap->devices[0].device, kDevA);
  EXPECT_EQ(snap->devices[0].resolved_path, kDevA);
  EXPECT_EQ(snap->devices[0].number, (DeviceNumber{kMajor, 0}));
  EXPECT_EQ(snap->devices[0].image_path, ImagePathOf(0));
  EXPECT_EQ(snap->devices[0].error_code, 0);

  tracker = backend_->GetTracker(kDevA);
  CBT_ASSERT_OK(tracker);
  EXPECT_EQ(tracker->snapshot_id, snap->id.ToString());
  EXPECT_EQ(tracker->image_path, ImagePathOf(0));

  absl::StatusOr<CbtInfo> info1 = backend_->GetCbtInfo(kDevA);
  CBT_ASSERT_OK(info1);
  EXPECT_EQ(info1->changes_number, 1);
  EXPECT_EQ(info1->generation_id, info0->generation_id);

  std::vector<uint8_t> map = ReadMap(kDevA);
  ASSERT_EQ(map.size(), 1024u);
  EXPECT_EQ(map[0], 1);
  EXPECT_EQ(map[160], 1);
  EXPECT_EQ(std::count_if(map.begin(), map.end(), [](uint8_t b) { return b != 0; }), 2);

  // Copy-on-write: the origin changes, the image keeps the data of take time.
  CBT_ASSERT_OK(emu_->WriteDevice(kDevA, 0, Pattern('c', 4096)));
  EXPECT_EQ(ReadImage(ImagePathOf(0), 0, 4096), Pattern('a', 4096));
  EXPECT_EQ(ReadImage(ImagePathOf(0), 10 * kMiB, 8192), Pattern('b', 8192));
  EXPECT_EQ(ReadImage(kDevA, 0, 4096), Pattern('c', 4096));
  // The read map is frozen while the snapshot is held.
  EXPECT_EQ(ReadMap(kDevA), map);

  EXPECT_EQ(Changed(kDevA, 0),
            (std::vector<ByteExtent>{{0, kBlock}, {10 * kMiB, kBlock}}));

  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
  EXPECT_TRUE(sink_.WaitFor([&](const SnapshotEvent& e) { return IsReleased(e, snap->id); },
                            std::chrono::seconds(5)));
  absl::StatusOr<std::vector<SnapshotState>> list = backend_->ListSnapshots();
  CBT_ASSERT_OK(list);
  EXPECT_TRUE(list->empty());
  tracker = backend_->GetTracker(kDevA);
  CBT_ASSERT_OK(tracker);
  EXPECT_TRUE(tracker->snapshot_id.empty());

  // The next incremental: exactly the writes since the first snapshot.
  CBT_ASSERT_OK(emu_->WriteDevice(kDevA, 20 * kMiB, Pattern('d', 4096)));
  absl::StatusOr<SnapshotState> snap2 = backend_->CreateSnapshot({kDevA}, Diff());
  CBT_ASSERT_OK(snap2);
  EXPECT_NE(snap2->id, snap->id);
  absl::StatusOr<CbtInfo> info2 = backend_->GetCbtInfo(kDevA);
  CBT_ASSERT_OK(info2);
  EXPECT_EQ(info2->changes_number, 2);
  EXPECT_EQ(info2->generation_id, info0->generation_id);
  CBT_ASSERT_OK(ValidateChangesBase(*info2, info1->generation_id, info1->changes_number));

  map = ReadMap(kDevA);
  EXPECT_EQ(map[0], 2);
  EXPECT_EQ(map[160], 1);
  EXPECT_EQ(map[320], 2);
  EXPECT_EQ(Changed(kDevA, info1->changes_number),
            (std::vector<ByteExtent>{{0, kBlock}, {20 * kMiB, kBlock}}));
  EXPECT_EQ(Changed(kDevA, 0),
            (std::vector<ByteExtent>{{0, kBlock}, {10 * kMiB, kBlock}, {20 * kMiB, kBlock}}));
  EXPECT_EQ(ReadImage(snap2->devices[0].image_path, 0, 4096), Pattern('c', 4096));
  EXPECT_EQ(ReadImage(snap2->devices[0].image_path, 20 * kMiB, 4096), Pattern('d', 4096));

  // Marking dirty shows up in the map being read now.
  CBT_ASSERT_OK(backend_->MarkDirty(kDevA, {SectorRange{30 * kMiB / 512, 1}}));
  map = ReadMap(kDevA);
  EXPECT_EQ(map[480], 2);

  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap2->id));
}

TEST_P(BlksnapBackendTest, GenerationChangesAfter255Snapshots) {
  Attach(kDevA);
  absl::StatusOr<CbtInfo> first = backend_->GetCbtInfo(kDevA);
  CBT_ASSERT_OK(first);
  CbtInfo previous = *first;
  for (int take = 1; take <= 256; ++take) {
    CBT_ASSERT_OK(emu_->WriteDevice(kDevA, static_cast<uint64_t>(take) * kBlock, "x"));
    absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA}, Diff());
    CBT_ASSERT_OK(snap);
    absl::StatusOr<CbtInfo> info = backend_->GetCbtInfo(kDevA);
    CBT_ASSERT_OK(info);
    if (take <= 254) {
      ASSERT_EQ(info->generation_id, first->generation_id) << "take " << take;
      ASSERT_EQ(info->changes_number, take);
    } else if (take == 255) {
      // The active number reached 256: a new generation; a backup based on the old one must
      // be a full one.
      EXPECT_NE(info->generation_id, first->generation_id);
      absl::Status base = ValidateChangesBase(*info, previous.generation_id,
                                              previous.changes_number);
      EXPECT_TRUE(IsFullBackupRequired(base)) << base;
    } else {
      // The 256th snapshot: the new generation's first numbered map, holding only the write
      // made since the 255th.
      EXPECT_NE(info->generation_id, first->generation_id);
      EXPECT_EQ(info->generation_id, previous.generation_id);
      EXPECT_EQ(info->changes_number, 1);
      EXPECT_EQ(Changed(kDevA, 0), (std::vector<ByteExtent>{{256 * kBlock, kBlock}}));
    }
    previous = *info;
    CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
  }
  EXPECT_TRUE(KernelSnapshots().empty());
}

TEST_P(BlksnapBackendTest, MultiDeviceSnapshot) {
  Attach(kDevA);
  Attach(kLinkB);  // by symlink
  CBT_ASSERT_OK(emu_->WriteDevice(kDevA, 1 * kMiB, Pattern('1', 4096)));
  CBT_ASSERT_OK(emu_->WriteDevice(kDevB, 2 * kMiB, Pattern('2', 4096)));

  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA, kLinkB}, Diff());
  CBT_ASSERT_OK(snap);
  ASSERT_EQ(snap->devices.size(), 2u);
  EXPECT_EQ(snap->devices[0].image_path, ImagePathOf(0));
  EXPECT_EQ(snap->devices[1].device, kLinkB);
  EXPECT_EQ(snap->devices[1].resolved_path, kDevB);
  EXPECT_EQ(snap->devices[1].number, (DeviceNumber{kMajor, 16}));
  EXPECT_EQ(snap->devices[1].image_path, ImagePathOf(16));

  CBT_ASSERT_OK(emu_->WriteDevice(kDevA, 1 * kMiB, Pattern('x', 4096)));
  CBT_ASSERT_OK(emu_->WriteDevice(kDevB, 2 * kMiB, Pattern('y', 4096)));
  EXPECT_EQ(ReadImage(ImagePathOf(0), 1 * kMiB, 4096), Pattern('1', 4096));
  EXPECT_EQ(ReadImage(ImagePathOf(16), 2 * kMiB, 4096), Pattern('2', 4096));
  EXPECT_EQ(Changed(kDevA, 0), (std::vector<ByteExtent>{{1 * kMiB, kBlock}}));
  EXPECT_EQ(Changed(kDevB, 0), (std::vector<ByteExtent>{{2 * kMiB, kBlock}}));

  absl::StatusOr<SnapshotState> got = backend_->GetSnapshot(snap->id);
  CBT_ASSERT_OK(got);
  ASSERT_EQ(got->devices.size(), 2u);
  EXPECT_EQ(got->devices[1].image_path, ImagePathOf(16));
  EXPECT_FALSE(got->corrupted);

  absl::StatusOr<std::vector<TrackerState>> trackers = backend_->ListTrackers();
  CBT_ASSERT_OK(trackers);
  ASSERT_EQ(trackers->size(), 2u);
  for (const TrackerState& tracker : *trackers) {
    EXPECT_EQ(tracker.snapshot_id, snap->id.ToString());
    EXPECT_FALSE(tracker.image_path.empty());
  }
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
  EXPECT_TRUE(KernelSnapshots().empty());
}

// Lookups do not queue behind an operation in flight (here a CreateSnapshot stopped right after
// its take, holding the operation lock): GetTracker, ListTrackers, GetSnapshot of another
// snapshot and GetCbtInfo answer meanwhile. ListSnapshots sees the new snapshot in the kernel but
// not yet in the agent's table, so it waits for the create and then lists it as the agent's own.
TEST_P(BlksnapBackendTest, LookupsDoNotWaitForASnapshotBeingTaken) {
  Attach(kDevA);
  Attach(kDevB);
  absl::StatusOr<SnapshotState> older = backend_->CreateSnapshot({kDevB}, Diff());
  CBT_ASSERT_OK(older);

  std::mutex mu;
  std::condition_variable cv;
  bool in_take = false;
  bool go = false;
  faults_->SetAfterIoctl([&](unsigned long request, void*) {
    if (request != kIoctlSnapshotTake) return;
    std::unique_lock<std::mutex> lock(mu);
    in_take = true;
    cv.notify_all();
    cv.wait(lock, [&] { return go; });
  });
  auto release_take = [&] {
    std::lock_guard<std::mutex> lock(mu);
    go = true;
    cv.notify_all();
  };
  std::future<absl::StatusOr<SnapshotState>> create = std::async(
      std::launch::async, [&] { return backend_->CreateSnapshot({kDevA}, Diff()); });
  struct ReleaseAtExit {  // a failed assertion must not leave the create blocked in its take
    std::function<void()> release;
    ~ReleaseAtExit() { release(); }
  } release_at_exit{release_take};
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return in_take; }));
  }

  std::future<void> lookups = std::async(std::launch::async, [&] {
    absl::StatusOr<TrackerState> tracker = backend_->GetTracker(kDevA);
    CBT_ASSERT_OK(tracker);
    EXPECT_TRUE(tracker->snapshot_id.empty());  // the take has not been committed yet
    absl::StatusOr<std::vector<TrackerState>> trackers = backend_->ListTrackers();
    CBT_ASSERT_OK(trackers);
    EXPECT_EQ(trackers->size(), 2u);
    absl::StatusOr<SnapshotState> got = backend_->GetSnapshot(older->id);
    CBT_ASSERT_OK(got);
    EXPECT_TRUE(got->known_to_agent);
    EXPECT_FALSE(got->corrupted);
    CBT_ASSERT_OK(backend_->GetCbtInfo(kDevA));
  });
  const bool answered = lookups.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  std::future<absl::StatusOr<std::vector<SnapshotState>>> list =
      std::async(std::launch::async, [&] { return backend_->ListSnapshots(); });
  const bool list_waited = list.wait_for(std::chrono::milliseconds(200)) ==
                           std::future_status::timeout;
  release_take();
  lookups.wait();
  EXPECT_TRUE(answered) << "the lookups waited for the create in flight";
  EXPECT_TRUE(list_waited) << "ListSnapshots answered while the table lacked a kernel snapshot";

  absl::StatusOr<SnapshotState> created = create.get();
  CBT_ASSERT_OK(created);
  absl::StatusOr<std::vector<SnapshotState>> listed = list.get();
  CBT_ASSERT_OK(listed);
  ASSERT_EQ(listed->size(), 2u);
  for (const SnapshotState& snapshot : *listed) {
    EXPECT_TRUE(snapshot.known_to_agent) << snapshot.id.ToString();
    EXPECT_TRUE(snapshot.id == older->id || snapshot.id == created->id) << snapshot.id.ToString();
  }
  faults_->Clear();
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(created->id));
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(older->id));
}

TEST_P(BlksnapBackendTest, AttachIsIdempotent) {
  bool already = true;
  absl::StatusOr<TrackerState> first = backend_->AttachTracker(kDevA, &already);
  CBT_ASSERT_OK(first);
  EXPECT_FALSE(already);
  CBT_ASSERT_OK(emu_->WriteDevice(kDevA, 0, "data"));
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA}, Diff());
  CBT_ASSERT_OK(snap);
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
  absl::StatusOr<CbtInfo> before = backend_->GetCbtInfo(kDevA);
  CBT_ASSERT_OK(before);

  absl::StatusOr<TrackerState> again = backend_->AttachTracker(kDevA, &already);
  CBT_ASSERT_OK(again);
  EXPECT_TRUE(already);
  EXPECT_EQ(again->resolved_path, first->resolved_path);
  EXPECT_EQ(again->number, first->number);
  // Through a symlink too.
  absl::StatusOr<TrackerState> by_link = backend_->AttachTracker(kLinkA, &already);
  CBT_ASSERT_OK(by_link);
  EXPECT_TRUE(already);
  EXPECT_EQ(by_link->resolved_path, kDevA);

  // The CBT was left alone.
  absl::StatusOr<CbtInfo> after = backend_->GetCbtInfo(kDevA);
  CBT_ASSERT_OK(after);
  EXPECT_EQ(after->generation_id, before->generation_id);
  EXPECT_EQ(after->changes_number, before->changes_number);

  absl::StatusOr<std::vector<TrackerState>> trackers = backend_->ListTrackers();
  CBT_ASSERT_OK(trackers);
  EXPECT_EQ(trackers->size(), 1u);
  EXPECT_EQ(state_->Get().trackers_size(), 1);

  // A device attached behind the agent's back is adopted with already_attached = true.
  ASSERT_EQ(Raw().Attach(kDevC), 0);
  absl::StatusOr<TrackerState> adopted = backend_->AttachTracker(kDevC, &already);
  CBT_ASSERT_OK(adopted);
  EXPECT_TRUE(already);
}

// ---------------------------------------------------------------------------------------------
// Error paths

TEST_P(BlksnapBackendTest, DevicePathErrors) {
  bool already = false;
  absl::StatusOr<TrackerState> result = backend_->AttachTracker("/dev/no-such-device", &already);
  CBT_EXPECT_CODE(result, absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "/dev/no-such-device"));

  result = backend_->AttachTracker(diff_dir_, &already);
  CBT_EXPECT_CODE(result, absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "is not a block device"))
      << result.status();

  result = backend_->AttachTracker("dev/emu-a", &already);
  CBT_EXPECT_CODE(result, absl::StatusCode::kInvalidArgument);
  CBT_EXPECT_CODE(backend_->AttachTracker("", &already), absl::StatusCode::kInvalidArgument);
  CBT_EXPECT_CODE(backend_->GetTracker("/dev/no-such-device"), absl::StatusCode::kNotFound);
  CBT_EXPECT_CODE(backend_->GetCbtInfo("relative"), absl::StatusCode::kInvalidArgument);
}

TEST_P(BlksnapBackendTest, NotTracked) {
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA}, Diff());
  CBT_EXPECT_CODE(snap, absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(snap.status().message(), "not tracked; call AttachTracker first"))
      << snap.status();

  absl::StatusOr<CbtInfo> info = backend_->GetCbtInfo(kDevA);
  CBT_EXPECT_CODE(info, absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(info.status().message(), "is not tracked")) << info.status();
  uint8_t byte = 0;
  CBT_EXPECT_CODE(backend_->ReadCbtMap(kDevA, 0, 1, &byte), absl::StatusCode::kNotFound);
  CBT_EXPECT_CODE(backend_->MarkDirty(kDevA, {SectorRange{0, 1}}), absl::StatusCode::kNotFound);
  CBT_EXPECT_CODE(backend_->GetTracker(kDevA), absl::StatusCode::kNotFound);
  CBT_EXPECT_CODE(backend_->DetachTracker(kDevA), absl::StatusCode::kNotFound);
  EXPECT_TRUE(KernelSnapshots().empty());
}

TEST_P(BlksnapBackendTest, CreateSnapshotValidation) {
  Attach(kDevA);
  Attach(kDevB);
  // No devices.
  CBT_EXPECT_CODE(backend_->CreateSnapshot({}, Diff()), absl::StatusCode::kInvalidArgument);
  // The same device twice, once through a symlink.
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA, kLinkA}, Diff());
  CBT_EXPECT_CODE(snap, absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(snap.status().message(), "twice")) << snap.status();
  // Limits.
  CBT_EXPECT_CODE(backend_->CreateSnapshot({kDevA}, Diff(0)), absl::StatusCode::kInvalidArgument);
  CBT_EXPECT_CODE(backend_->CreateSnapshot({kDevA}, Diff(1 * kMiB + 100)),
                  absl::StatusCode::kInvalidArgument);
  // Diff storage paths.
  snap = backend_->CreateSnapshot({kDevA}, DiffStorageSpec{root_ + "/missing", 1 * kGiB});
  CBT_EXPECT_CODE(snap, absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(snap.status().message(), root_ + "/missing")) << snap.status();
  CBT_EXPECT_CODE(backend_->CreateSnapshot({kDevA}, DiffStorageSpec{"diff", 1 * kGiB}),
                  absl::StatusCode::kInvalidArgument);

  // Diff storage on a device of the snapshot: a directory mounted from it...
  const std::string on_a = root_ + "/on-a";
  ASSERT_EQ(::mkdir(on_a.c_str(), 0700), 0);
  CBT_ASSERT_OK(emu_->AddMount(on_a, kDevA));
  snap = backend_->CreateSnapshot({kDevB, kDevA}, DiffStorageSpec{on_a, 1 * kGiB});
  CBT_EXPECT_CODE(snap, absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(snap.status().message(), kDevA)) << snap.status();
  // ...or the device itself.
  snap = backend_->CreateSnapshot({kDevA}, DiffStorageSpec{kDevA, 1 * kGiB});
  CBT_EXPECT_CODE(snap, absl::StatusCode::kFailedPrecondition);
  // On a device that is not in the snapshot it is fine.
  snap = backend_->CreateSnapshot({kDevB}, DiffStorageSpec{on_a, 1 * kGiB});
  CBT_ASSERT_OK(snap);
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));

  // A device already in one of the agent's snapshots.
  snap = backend_->CreateSnapshot({kDevA}, Diff());
  CBT_ASSERT_OK(snap);
  CBT_EXPECT_CODE(backend_->CreateSnapshot({kDevB, kDevA}, Diff()),
                  absl::StatusCode::kAlreadyExists);
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
  EXPECT_TRUE(KernelSnapshots().empty());
}

TEST_P(BlksnapBackendTest, UnknownSnapshot) {
  const Uuid id = NewRandomUuid();
  absl::StatusOr<SnapshotState> got = backend_->GetSnapshot(id);
  CBT_EXPECT_CODE(got, absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), id.ToString()));
  absl::Status released = backend_->ReleaseSnapshot(id);
  CBT_EXPECT_CODE(released, absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(released.message(), id.ToString())) << released;
}

TEST_P(BlksnapBackendTest, DetachTracker) {
  Attach(kDevA);
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA}, Diff());
  CBT_ASSERT_OK(snap);
  absl::Status detached = backend_->DetachTracker(kDevA);
  CBT_EXPECT_CODE(detached, absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(detached.message(), snap->id.ToString())) << detached;
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));

  CBT_ASSERT_OK(backend_->DetachTracker(kLinkA));
  CBT_EXPECT_CODE(backend_->GetTracker(kDevA), absl::StatusCode::kNotFound);
  CBT_EXPECT_CODE(backend_->GetCbtInfo(kDevA), absl::StatusCode::kNotFound);
  CBT_EXPECT_CODE(backend_->DetachTracker(kDevA), absl::StatusCode::kNotFound);
  absl::StatusOr<std::vector<TrackerState>> trackers = backend_->ListTrackers();
  CBT_ASSERT_OK(trackers);
  EXPECT_TRUE(trackers->empty());
  EXPECT_EQ(state_->Get().trackers_size(), 0);
  blksnap_cbtinfo info{};
  EXPECT_EQ(Raw().CbtInfo(kDevA, &info), ENOENT);  // really detached in the kernel

  // A device in a snapshot made by another tool cannot be detached either.
  Attach(kDevB);
  Uuid foreign;
  ASSERT_EQ(Raw().Create(diff_dir_, 1 * kGiB, &foreign), 0);
  ASSERT_EQ(Raw().Add(kDevB, foreign), 0);
  ASSERT_EQ(Raw().Take(foreign), 0);
  CBT_EXPECT_CODE(backend_->DetachTracker(kDevB), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(Raw().Destroy(foreign), 0);
  CBT_ASSERT_OK(backend_->DetachTracker(kDevB));
}

TEST_P(BlksnapBackendTest, TrackerGoneBehindTheAgentsBack) {
  Attach(kDevA);
  Attach(kDevB);
  ASSERT_EQ(Raw().Detach(kDevA), 0);
  absl::StatusOr<TrackerState> got = backend_->GetTracker(kDevA);
  CBT_EXPECT_CODE(got, absl::StatusCode::kNotFound);
  absl::StatusOr<std::vector<TrackerState>> trackers = backend_->ListTrackers();
  CBT_ASSERT_OK(trackers);
  ASSERT_EQ(trackers->size(), 1u);
  EXPECT_EQ((*trackers)[0].resolved_path, kDevB);
  ASSERT_EQ(state_->Get().trackers_size(), 1);
  EXPECT_EQ(state_->Get().trackers(0).resolved_path(), kDevB);
}

TEST_P(BlksnapBackendTest, CbtMapRanges) {
  Attach(kDevA);
  absl::StatusOr<CbtInfo> info = backend_->GetCbtInfo(kDevA);
  CBT_ASSERT_OK(info);
  std::vector<uint8_t> buffer(info->block_count + 16);
  CBT_ASSERT_OK(backend_->ReadCbtMap(kDevA, 0, info->block_count, buffer.data()));
  CBT_ASSERT_OK(backend_->ReadCbtMap(kDevA, info->block_count - 1, 1, buffer.data()));
  CBT_ASSERT_OK(backend_->ReadCbtMap(kDevA, 5, 0, buffer.data()));

  absl::Status status = backend_->ReadCbtMap(kDevA, info->block_count - 1, 2, buffer.data());
  CBT_EXPECT_CODE(status, absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(absl::StrContains(status.message(), kDevA)) << status;
  CBT_EXPECT_CODE(backend_->ReadCbtMap(kDevA, info->block_count, 1, buffer.data()),
                  absl::StatusCode::kOutOfRange);
  CBT_EXPECT_CODE(backend_->ReadCbtMap(kDevA, uint64_t{1} << 33, 1, buffer.data()),
                  absl::StatusCode::kOutOfRange);
  CBT_EXPECT_CODE(backend_->ReadCbtMap(kDevA, UINT64_MAX, 2, buffer.data()),
                  absl::StatusCode::kOutOfRange);
}

TEST_P(BlksnapBackendTest, LargeMapIsReadInSlices) {
  // 128 GiB: 2 Mi blocks of 64 KiB, a 2 MiB map, read in 1 MiB slices.
  const char kBig[] = "/dev/emu-big";
  CBT_ASSERT_OK(emu_->AddDevice(kBig, 128 * kGiB, kMajor, 64));
  Attach(kBig);
  absl::StatusOr<CbtInfo> info = backend_->GetCbtInfo(kBig);
  CBT_ASSERT_OK(info);
  ASSERT_EQ(info->block_count, 2u * 1024 * 1024);
  CBT_ASSERT_OK(emu_->WriteDevice(kBig, 100 * kGiB, "z"));
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kBig}, Diff());
  CBT_ASSERT_OK(snap);
  std::vector<uint8_t> map(info->block_count);
  CBT_ASSERT_OK(backend_->ReadCbtMap(kBig, 0, map.size(), map.data()));
  EXPECT_EQ(map[100 * kGiB / kBlock], 1);
  EXPECT_EQ(std::count(map.begin(), map.end(), 1), 1);
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
}

TEST_P(BlksnapBackendTest, MarkDirtyRanges) {
  Attach(kDevA);
  const uint64_t sectors = 64 * kMiB / 512;
  absl::Status status = backend_->MarkDirty(kDevA, {SectorRange{sectors - 1, 2}});
  CBT_EXPECT_CODE(status, absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(absl::StrContains(status.message(), std::to_string(sectors - 1))) << status;
  CBT_EXPECT_CODE(backend_->MarkDirty(kDevA, {SectorRange{0, 1}, SectorRange{sectors, 1}}),
                  absl::StatusCode::kOutOfRange);
  CBT_EXPECT_CODE(backend_->MarkDirty(kDevA, {SectorRange{UINT64_MAX, 2}}),
                  absl::StatusCode::kOutOfRange);
  // Nothing of a rejected request was applied.
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA}, Diff());
  CBT_ASSERT_OK(snap);
  std::vector<uint8_t> map = ReadMap(kDevA);
  EXPECT_EQ(std::count_if(map.begin(), map.end(), [](uint8_t b) { return b != 0; }), 0);
  CBT_ASSERT_OK(backend_->MarkDirty(kDevA, {}));
  CBT_ASSERT_OK(backend_->MarkDirty(kDevA, {SectorRange{sectors - 1, 1}, SectorRange{0, 0}}));
  map = ReadMap(kDevA);
  EXPECT_EQ(map[1023], 1);
  EXPECT_EQ(std::count_if(map.begin(), map.end(), [](uint8_t b) { return b != 0; }), 1);
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
}

// ---------------------------------------------------------------------------------------------
// Events

TEST_P(BlksnapBackendTest, OverflowPublishesCorruptedEvent) {
  Attach(kDevA);
  // 4 MiB limit, 2 MiB of it reserved by the module: room for 8 chunks of 256 KiB.
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA}, Diff(4 * kMiB));
  CBT_ASSERT_OK(snap);
  const std::string block = Pattern('o', 1 * kMiB);
  for (uint64_t offset = 0; offset < 32 * kMiB; offset += kMiB) {
    CBT_ASSERT_OK(emu_->WriteDevice(kDevA, offset, block));
  }
  SnapshotEvent event;
  ASSERT_TRUE(sink_.WaitFor(
      [&](const SnapshotEvent& e) {
        return e.snapshot_id == snap->id && e.kind == SnapshotEvent::Kind::kCorrupted;
      },
      std::chrono::seconds(10), &event));
  EXPECT_EQ(event.errno_value, ENOSPC);
  EXPECT_EQ(event.device, kDevA);
  EXPECT_EQ(event.number, (DeviceNumber{kMajor, 0}));
  EXPECT_GT(event.time_unix_nanos, 0);

  absl::StatusOr<SnapshotState> got = backend_->GetSnapshot(snap->id);
  CBT_ASSERT_OK(got);
  EXPECT_TRUE(got->corrupted);
  ASSERT_EQ(got->devices.size(), 1u);
  EXPECT_EQ(got->devices[0].error_code, -ENOSPC);
  absl::StatusOr<std::vector<SnapshotState>> list = backend_->ListSnapshots();
  CBT_ASSERT_OK(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_TRUE((*list)[0].corrupted);
  // The origin is intact.
  EXPECT_EQ(ReadImage(kDevA, 0, 16), Pattern('o', 16));

  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
  EXPECT_TRUE(sink_.WaitFor([&](const SnapshotEvent& e) { return IsReleased(e, snap->id); },
                            std::chrono::seconds(5)));
  EXPECT_EQ(sink_.Count([&](const SnapshotEvent& e) { return IsReleased(e, snap->id); }), 1u);
}

TEST_P(BlksnapBackendTest, SnapshotDestroyedBehindTheAgentsBack) {
  Attach(kDevA);
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA}, Diff());
  CBT_ASSERT_OK(snap);
  ASSERT_EQ(Raw().Destroy(snap->id), 0);
  EXPECT_TRUE(sink_.WaitFor([&](const SnapshotEvent& e) { return IsReleased(e, snap->id); },
                            std::chrono::seconds(5)));
  CBT_EXPECT_CODE(backend_->GetSnapshot(snap->id), absl::StatusCode::kNotFound);
  EXPECT_EQ(state_->Get().snapshots_size(), 0);
  absl::StatusOr<TrackerState> tracker = backend_->GetTracker(kDevA);
  CBT_ASSERT_OK(tracker);
  EXPECT_TRUE(tracker->snapshot_id.empty());
  EXPECT_EQ(sink_.Count([&](const SnapshotEvent& e) { return IsReleased(e, snap->id); }), 1u);
}

TEST_P(BlksnapBackendTest, DeviceRemoved) {
  Attach(kDevA);
  Attach(kDevB);
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevB}, Diff());
  CBT_ASSERT_OK(snap);
  CBT_ASSERT_OK(emu_->RemoveDevice(kDevB));
  absl::StatusOr<SnapshotState> got = backend_->GetSnapshot(snap->id);
  CBT_ASSERT_OK(got);
  EXPECT_TRUE(got->corrupted);
  ASSERT_EQ(got->devices.size(), 1u);
  EXPECT_NE(got->devices[0].error_code, 0);
  absl::StatusOr<std::vector<TrackerState>> trackers = backend_->ListTrackers();
  CBT_ASSERT_OK(trackers);
  ASSERT_EQ(trackers->size(), 1u);
  EXPECT_EQ((*trackers)[0].resolved_path, kDevA);
  CBT_EXPECT_CODE(backend_->GetCbtInfo(kDevB), absl::StatusCode::kNotFound);
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
  EXPECT_TRUE(KernelSnapshots().empty());
}

// ---------------------------------------------------------------------------------------------
// Rollback

TEST_P(BlksnapBackendTest, RollbackWhenTakeFails) {
  Attach(kDevA);
  Attach(kDevB);
  Raw();  // its control descriptor is open from here on
  const int threads = ThreadCount();
  const int descriptors = faults_->open_descriptors.load();
  faults_->FailIoctl(kIoctlSnapshotTake, EIO);
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA, kDevB}, Diff());
  CBT_EXPECT_CODE(snap, absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(snap.status().message(), "errno 5")) << snap.status();
  EXPECT_TRUE(absl::StrContains(snap.status().message(), kDevA)) << snap.status();
  EXPECT_TRUE(absl::StrContains(snap.status().message(), "rolled back")) << snap.status();
  faults_->Clear();

  EXPECT_TRUE(KernelSnapshots().empty());
  EXPECT_EQ(ThreadCount(), threads);
  EXPECT_EQ(faults_->open_descriptors.load(), descriptors);
  EXPECT_EQ(state_->Get().snapshots_size(), 0);
  absl::StatusOr<std::vector<SnapshotState>> list = backend_->ListSnapshots();
  CBT_ASSERT_OK(list);
  EXPECT_TRUE(list->empty());
  // Nothing is left half-done: the same devices can be snapshotted now.
  snap = backend_->CreateSnapshot({kDevA, kDevB}, Diff());
  CBT_ASSERT_OK(snap);
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
}

TEST_P(BlksnapBackendTest, RollbackWhenAddFindsTheDeviceBusy) {
  Attach(kDevA);
  Attach(kDevB);
  // B already belongs to a snapshot made by another tool.
  Uuid foreign;
  ASSERT_EQ(Raw().Create(diff_dir_, 1 * kGiB, &foreign), 0);
  ASSERT_EQ(Raw().Add(kDevB, foreign), 0);

  const int threads = ThreadCount();
  const int descriptors = faults_->open_descriptors.load();
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA, kDevB}, Diff());
  CBT_EXPECT_CODE(snap, absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(snap.status().message(), kDevB)) << snap.status();
  EXPECT_TRUE(absl::StrContains(snap.status().message(), "errno 16")) << snap.status();
  EXPECT_EQ(KernelSnapshots(), std::vector<Uuid>{foreign});
  EXPECT_EQ(ThreadCount(), threads);
  EXPECT_EQ(faults_->open_descriptors.load(), descriptors);

  ASSERT_EQ(Raw().Destroy(foreign), 0);
  snap = backend_->CreateSnapshot({kDevA, kDevB}, Diff());
  CBT_ASSERT_OK(snap);
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(snap->id));
}

TEST_P(BlksnapBackendTest, RollbackWhenTheKernelSkipsADevice) {
  Attach(kDevA);
  Attach(kDevB);
  // Make SNAPSHOTINFO of every device answer "no image", as when the kernel silently leaves out
  // the device holding the diff storage.
  const Flavour flavour = GetParam().flavour;
  faults_->SetAfterIoctl([flavour](unsigned long request, void* arg) {
    uint32_t cmd = 0;
    uint64_t opt = 0;
    if (flavour == Flavour::kVal7 && request == kVal7BdevfilterCtl) {
      cmd = static_cast<bdevfilter_ctl*>(arg)->cmd;
      opt = static_cast<bdevfilter_ctl*>(arg)->opt;
    } else if ((flavour == Flavour::kLk615 && request == kLk615BlkfilterCtl) ||
               (flavour == Flavour::kV7 && request == kV7BlkfilterCtl)) {
      cmd = static_cast<blkfilter_ctl*>(arg)->cmd;
      opt = static_cast<blkfilter_ctl*>(arg)->opt;
    } else {
      return;
    }
    if (cmd == kCtlSnapshotInfo) {
      reinterpret_cast<blksnap_snapshotinfo*>(static_cast<uintptr_t>(opt))->image[0] = 0;
    }
  });
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA, kDevB}, Diff());
  faults_->Clear();
  CBT_EXPECT_CODE(snap, absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(snap.status().message(), kDevA)) << snap.status();
  EXPECT_TRUE(KernelSnapshots().empty());
  EXPECT_EQ(state_->Get().snapshots_size(), 0);
}

// ---------------------------------------------------------------------------------------------
// Restart

TEST_P(BlksnapBackendTest, RestartKeepsTrackersAndSnapshots) {
  Attach(kDevA);
  Attach(kDevB);
  Attach(kDevC);
  Attach(kDevD);
  absl::StatusOr<SnapshotState> kept = backend_->CreateSnapshot({kLinkA}, Diff());
  CBT_ASSERT_OK(kept);
  absl::StatusOr<SnapshotState> lost = backend_->CreateSnapshot({kDevD}, Diff());
  CBT_ASSERT_OK(lost);
  absl::StatusOr<CbtInfo> info_before = backend_->GetCbtInfo(kDevA);
  CBT_ASSERT_OK(info_before);

  CloseBackend();
  EXPECT_EQ(faults_->open_descriptors.load(), raw_ ? 1 : 0);  // only the raw client's control fd

  // While the agent is down: another tool snapshots B, C loses its tracker, the snapshot of D
  // goes away.
  Uuid foreign;
  ASSERT_EQ(Raw().Create(diff_dir_, 1 * kGiB, &foreign), 0);
  ASSERT_EQ(Raw().Add(kDevB, foreign), 0);
  ASSERT_EQ(Raw().Take(foreign), 0);
  ASSERT_EQ(Raw().Detach(kDevC), 0);
  ASSERT_EQ(Raw().Destroy(lost->id), 0);

  OpenBackend();
  absl::StatusOr<std::vector<TrackerState>> trackers = backend_->ListTrackers();
  CBT_ASSERT_OK(trackers);
  std::vector<std::string> paths;
  for (const TrackerState& tracker : *trackers) paths.push_back(tracker.resolved_path);
  std::sort(paths.begin(), paths.end());
  EXPECT_EQ(paths, (std::vector<std::string>{kDevA, kDevB, kDevD}));
  for (const TrackerState& tracker : *trackers) {
    if (tracker.resolved_path == kDevA) {
      EXPECT_EQ(tracker.snapshot_id, kept->id.ToString());
      EXPECT_EQ(tracker.image_path, ImagePathOf(0));
    } else {
      EXPECT_TRUE(tracker.snapshot_id.empty()) << tracker.resolved_path;
    }
  }
  CBT_EXPECT_CODE(backend_->GetTracker(kDevC), absl::StatusCode::kNotFound);

  absl::StatusOr<SnapshotState> got = backend_->GetSnapshot(kept->id);
  CBT_ASSERT_OK(got);
  EXPECT_TRUE(got->known_to_agent);
  EXPECT_EQ(got->created_unix_nanos, kept->created_unix_nanos);
  EXPECT_EQ(got->diff_storage.path, diff_dir_);
  ASSERT_EQ(got->devices.size(), 1u);
  EXPECT_EQ(got->devices[0].device, kLinkA);
  EXPECT_EQ(got->devices[0].resolved_path, kDevA);
  EXPECT_EQ(got->devices[0].image_path, ImagePathOf(0));
  CBT_EXPECT_CODE(backend_->GetSnapshot(lost->id), absl::StatusCode::kNotFound);

  absl::StatusOr<std::vector<SnapshotState>> list = backend_->ListSnapshots();
  CBT_ASSERT_OK(list);
  ASSERT_EQ(list->size(), 2u);
  for (const SnapshotState& snapshot : *list) {
    if (snapshot.id == kept->id) {
      EXPECT_TRUE(snapshot.known_to_agent);
    } else {
      EXPECT_EQ(snapshot.id, foreign);
      EXPECT_FALSE(snapshot.known_to_agent);
      EXPECT_EQ(snapshot.created_unix_nanos, 0);
    }
  }
  absl::StatusOr<SnapshotState> foreign_state = backend_->GetSnapshot(foreign);
  CBT_ASSERT_OK(foreign_state);
  EXPECT_FALSE(foreign_state->known_to_agent);

  // The state file was cleaned up.
  const cbtagent::state::AgentState state = state_->Get();
  EXPECT_EQ(state.backend(), "blksnap");
  EXPECT_EQ(state.trackers_size(), 3);
  ASSERT_EQ(state.snapshots_size(), 1);
  EXPECT_EQ(state.snapshots(0).id(), kept->id.ToString());

  // The CBT went on.
  absl::StatusOr<CbtInfo> info_after = backend_->GetCbtInfo(kDevA);
  CBT_ASSERT_OK(info_after);
  EXPECT_EQ(info_after->generation_id, info_before->generation_id);
  EXPECT_EQ(info_after->changes_number, info_before->changes_number);

  // The restarted event watcher notices the snapshot going away.
  ASSERT_EQ(Raw().Destroy(kept->id), 0);
  EXPECT_TRUE(sink_.WaitFor([&](const SnapshotEvent& e) { return IsReleased(e, kept->id); },
                            std::chrono::seconds(5)));
  // A foreign snapshot can be released through the agent.
  CBT_ASSERT_OK(backend_->ReleaseSnapshot(foreign));
  EXPECT_TRUE(KernelSnapshots().empty());
}

TEST_P(BlksnapBackendTest, ShutdownLeavesKernelObjectsAndClosesDescriptors) {
  Attach(kDevA);
  absl::StatusOr<SnapshotState> snap = backend_->CreateSnapshot({kDevA}, Diff());
  CBT_ASSERT_OK(snap);
  const int threads = ThreadCount();
  backend_->Shutdown();
  EXPECT_EQ(ThreadCount(), threads - 1);  // the snapshot's event watcher
  // Tracker descriptors are closed; the control (and bdevfilter) descriptors go with the object.
  EXPECT_LE(faults_->open_descriptors.load(), 2);
  CBT_EXPECT_CODE(backend_->ListTrackers(), absl::StatusCode::kUnavailable);
  backend_.reset();
  EXPECT_EQ(faults_->open_descriptors.load(), 0);
  EXPECT_EQ(KernelSnapshots(), std::vector<Uuid>{snap->id});
  blksnap_cbtinfo info{};
  EXPECT_EQ(Raw().CbtInfo(kDevA, &info), 0);
}

INSTANTIATE_TEST_SUITE_P(
    AllFlavours, BlksnapBackendTest,
    ::testing::Values(FlavourCase{Flavour::kLk615, "6.15.0", "lk615"},
                      FlavourCase{Flavour::kV7, "6.9.0", "v7"},
                      FlavourCase{Flavour::kVal7, "6.1.0-50-amd64", "val7"}),
    [](const ::testing::TestParamInfo<FlavourCase>& info) { return info.param.name; });

}  // namespace
}  // namespace cbt::blksnap
