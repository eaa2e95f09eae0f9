// Tests that need no emulator: errno mapping, flavour decision against a scripted kernel,
// event decoding.
#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "backend/errno_status.h"
#include "blksnap/event_watcher.h"
#include "blksnap/flavour.h"
#include "blksnap/uapi.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace cbt::blksnap {
namespace {

using ::cbt::agent::ErrnoStatus;

TEST(ErrnoStatusTest, MapsErrnoToTheBackendConvention) {
  const std::map<int, absl::StatusCode> expected = {
      {ENOENT, absl::StatusCode::kNotFound},
      {ENODEV, absl::StatusCode::kNotFound},
      {ESRCH, absl::StatusCode::kNotFound},
      {EINVAL, absl::StatusCode::kInvalidArgument},
      {ENODATA, absl::StatusCode::kOutOfRange},
      {EFAULT, absl::StatusCode::kDataLoss},
      {ENOSPC, absl::StatusCode::kResourceExhausted},
      {EALREADY, absl::StatusCode::kAlreadyExists},
      {EBUSY, absl::StatusCode::kFailedPrecondition},
      {EPERM, absl::StatusCode::kPermissionDenied},
      {EACCES, absl::StatusCode::kPermissionDenied},
      {ENOTTY, absl::StatusCode::kUnavailable},
      {ETIMEDOUT, absl::StatusCode::kDeadlineExceeded},
      {EXDEV, absl::StatusCode::kInternal},
  };
  for (const auto& [err, code] : expected) {
    EXPECT_EQ(agent::ErrnoToStatusCode(err), code) << "errno " << err;
    EXPECT_EQ(ErrnoStatus(err, "ctx").code(), code) << "errno " << err;
  }
}

TEST(ErrnoStatusTest, MessageAndOverride) {
  EXPECT_TRUE(ErrnoStatus(0, "nothing").ok());
  const absl::Status status = ErrnoStatus(ENODEV, "release snapshot x");
  EXPECT_EQ(status.message(), "release snapshot x: No such device (errno 19)");
  const absl::Status overridden =
      ErrnoStatus(ENOENT, "attach", absl::StatusCode::kUnavailable);
  EXPECT_EQ(overridden.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(overridden.message(), "attach: No such file or directory (errno 2)");
}

// A kernel with a fixed set of device nodes and a scripted VERSION answer; records ioctls.
class ScriptedKernel final : public Kernel {
 public:
  std::set<std::string> nodes;
  std::string release = "6.15.0";
  blksnap_version version{2, 0, 0, 0};
  std::vector<unsigned long> ioctls;
  int open_descriptors = 0;

  int Open(const std::string& path, int, int* fd) override {
    if (nodes.count(path) == 0) return ENOENT;
    *fd = 100 + open_descriptors++;
    return 0;
  }
  int Close(int) override {
    --open_descriptors;
    return 0;
  }
  int Ioctl(int, unsigned long request, void* arg) override {
    ioctls.push_back(request);
    if (request == kIoctlVersion) {
      std::memcpy(arg, &version, sizeof(version));
      return 0;
    }
    return ENOTTY;
  }
  int Stat(const std::string& path, FileStatus* status) override {
    if (nodes.count(path) == 0) return ENOENT;
    *status = FileStatus{};
    return 0;
  }
  int RealPath(const std::string& path, std::string* resolved) override {
    *resolved = path;
    return 0;
  }
  int KernelRelease(std::string* out) override {
    *out = release;
    return 0;
  }
};

struct ReleaseCase {
  const char* release;
  Flavour expected;
};

TEST(DetectFlavourTest, UpstreamNumberingFollowsTheKernelRelease) {
  const ReleaseCase cases[] = {
      {"6.15.0", Flavour::kLk615},         {"6.15.0-emu", Flavour::kLk615},
      {"6.16.3-arch1", Flavour::kLk615},   {"7.0.0", Flavour::kLk615},
      {"6.14.11", Flavour::kV7},           {"6.9.0", Flavour::kV7},
      {"6.1.0-50-amd64", Flavour::kV7},    {"5.10.0", Flavour::kV7},
  };
  for (const ReleaseCase& c : cases) {
    ScriptedKernel kernel;
    kernel.nodes = {"/dev/blksnap-control"};
    kernel.release = c.release;
    absl::StatusOr<FlavourChoice> choice = DetectFlavour(kernel, "auto");
    CBT_ASSERT_OK(choice);
    EXPECT_EQ(choice->flavour, c.expected) << c.release;
    EXPECT_EQ(choice->control_device, "/dev/blksnap-control");
    EXPECT_EQ(choice->module_version, "2.0.0.0");
    EXPECT_NE(choice->reason.find(c.expected == Flavour::kLk615 ? "lk6.15" : "v7"),
              std::string::npos)
        << choice->reason;
    // Only VERSION was sent: no filter ioctl is ever tried to find out.
    EXPECT_EQ(kernel.ioctls, std::vector<unsigned long>{kIoctlVersion});
    EXPECT_EQ(kernel.open_descriptors, 0);
  }
}

TEST(DetectFlavourTest, Val7WhenBothOutOfTreeDevicesExist) {
  ScriptedKernel kernel;
  kernel.nodes = {"/dev/veeamblksnap", "/dev/bdevfilter", "/dev/blksnap-control"};
  kernel.version = blksnap_version{7, 0, 0, 0};
  absl::StatusOr<FlavourChoice> choice = DetectFlavour(kernel, "");
  CBT_ASSERT_OK(choice);
  EXPECT_EQ(choice->flavour, Flavour::kVal7);
  EXPECT_EQ(choice->control_device, "/dev/veeamblksnap");
  EXPECT_EQ(choice->module_version, "7.0.0.0");
}

TEST(DetectFlavourTest, MissingModuleIsUnavailable) {
  ScriptedKernel kernel;
  absl::StatusOr<FlavourChoice> choice = DetectFlavour(kernel, "auto");
  CBT_EXPECT_CODE(choice, absl::StatusCode::kUnavailable);
  EXPECT_NE(choice.status().message().find("not loaded"), std::string::npos);

  kernel.nodes = {"/dev/veeamblksnap"};  // bdevfilter missing
  choice = DetectFlavour(kernel, "auto");
  CBT_EXPECT_CODE(choice, absl::StatusCode::kUnavailable);
  EXPECT_NE(choice.status().message().find("bdevfilter"), std::string::npos);
}

TEST(DetectFlavourTest, ForcedFlavour) {
  ScriptedKernel kernel;
  kernel.nodes = {"/dev/blksnap-control"};
  kernel.release = "6.15.0";
  absl::StatusOr<FlavourChoice> choice = DetectFlavour(kernel, "v7");
  CBT_ASSERT_OK(choice);
  EXPECT_EQ(choice->flavour, Flavour::kV7);
  EXPECT_NE(choice->reason.find("forced"), std::string::npos);

  CBT_EXPECT_CODE(DetectFlavour(kernel, "val7"), absl::StatusCode::kUnavailable);
  CBT_EXPECT_CODE(DetectFlavour(kernel, "v8"), absl::StatusCode::kInvalidArgument);

  kernel.release = "garbage";
  CBT_EXPECT_CODE(DetectFlavour(kernel, "auto"), absl::StatusCode::kFailedPrecondition);
  CBT_ASSERT_OK(DetectFlavour(kernel, "lk6.15"));
}

TEST(FlavourTest, NamesAndImages) {
  EXPECT_EQ(FlavourName(Flavour::kLk615), "lk6.15");
  EXPECT_EQ(FlavourName(Flavour::kV7), "v7");
  EXPECT_EQ(FlavourName(Flavour::kVal7), "val7");
  EXPECT_EQ(ImageDiskName(Flavour::kLk615, 8, 1), "blksnap-8-1");
  EXPECT_EQ(ImageDiskName(Flavour::kV7, 8, 1), "blksnap-image_8:1");
  EXPECT_EQ(ImageDiskName(Flavour::kVal7, 8, 1), "veeamblksnapimg_8:1");
  int major = 0;
  int minor = 0;
  EXPECT_TRUE(ParseKernelRelease("6.1.0-50-amd64", &major, &minor));
  EXPECT_EQ(major, 6);
  EXPECT_EQ(minor, 1);
  EXPECT_FALSE(ParseKernelRelease("6", &major, &minor));
  EXPECT_FALSE(ParseKernelRelease("", &major, &minor));
}

TEST(DecodeEventTest, PerFlavour) {
  Uuid id = NewRandomUuid();
  const std::vector<WatchedDevice> devices = {{{8, 1}, "/dev/sda1"}, {{8, 17}, "/dev/sdb1"}};
  blksnap_snapshot_event event{};
  event.code = kEventCorrupted;
  blksnap_event_corrupted corrupted{8, 17, 28};
  std::memcpy(event.data, &corrupted, sizeof(corrupted));
  std::string skipped;
  for (Flavour flavour : {Flavour::kLk615, Flavour::kV7, Flavour::kVal7}) {
    auto decoded = DecodeEvent(flavour, id, event, devices, &skipped);
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(decoded->kind, agent::SnapshotEvent::Kind::kCorrupted);
    EXPECT_EQ(decoded->snapshot_id, id);
    EXPECT_EQ(decoded->device, "/dev/sdb1");
    EXPECT_EQ(decoded->number, (agent::DeviceNumber{8, 17}));
    EXPECT_EQ(decoded->errno_value, 28);
    EXPECT_GT(decoded->time_unix_nanos, 0);
  }

  event = blksnap_snapshot_event{};
  event.code = 1;
  blksnap_event_no_space no_space{8192};
  std::memcpy(event.data, &no_space, sizeof(no_space));
  for (Flavour flavour : {Flavour::kLk615, Flavour::kVal7}) {
    auto decoded = DecodeEvent(flavour, id, event, devices, &skipped);
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(decoded->kind, agent::SnapshotEvent::Kind::kNoSpace);
    EXPECT_EQ(decoded->requested_bytes, 8192u * 512u);
  }
  EXPECT_FALSE(DecodeEvent(Flavour::kV7, id, event, devices, &skipped).has_value());
  event.code = 42;
  EXPECT_FALSE(DecodeEvent(Flavour::kLk615, id, event, devices, &skipped).has_value());
  EXPECT_NE(skipped.find("42"), std::string::npos);
}

}  // namespace
}  // namespace cbt::blksnap
