// The device and diff-storage allowlists over a fake file system.
#include "server/path_guard.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <map>

namespace cbt::agent {
namespace {

using blksnap::FileStatus;

// Paths map to a resolved path (symlinks) and a status; everything else is ENOENT.
class FakeFileSystem final : public blksnap::Kernel {
 public:
  void Block(const std::string& path, uint32_t major, uint32_t minor) {
    FileStatus s;
    s.is_block_device = true;
    s.rdev_major = major;
    s.rdev_minor = minor;
    nodes_[path] = s;
  }
  void Char(const std::string& path) { nodes_[path] = FileStatus{}; }
  void Dir(const std::string& path, uint32_t dev_major = 0, uint32_t dev_minor = 1) {
    FileStatus s;
    s.is_directory = true;
    s.dev_major = dev_major;
    s.dev_minor = dev_minor;
    nodes_[path] = s;
  }
  void File(const std::string& path, uint32_t dev_major = 0, uint32_t dev_minor = 1) {
    FileStatus s;
    s.is_regular_file = true;
    s.dev_major = dev_major;
    s.dev_minor = dev_minor;
    nodes_[path] = s;
  }
  void Link(const std::string& link, const std::string& target) { links_[link] = target; }

  int Open(const std::string&, int, int*) override { return ENOSYS; }
  int Close(int) override { return ENOSYS; }
  int Ioctl(int, unsigned long, void*) override { return ENOSYS; }
  int Stat(const std::string& path, FileStatus* status) override {
    std::string resolved;
    if (int err = RealPath(path, &resolved); err != 0) return err;
    *status = nodes_.at(resolved);
    return 0;
  }
  int RealPath(const std::string& path, std::string* resolved) override {
    std::string current = path;
    for (int hops = 0; links_.count(current) != 0; ++hops) {
      if (hops > 8) return ELOOP;
      current = links_.at(current);
    }
    if (nodes_.count(current) == 0) return ENOENT;
    *resolved = current;
    return 0;
  }
  int KernelRelease(std::string* release) override {
    *release = "fake";
    return 0;
  }

 private:
  std::map<std::string, FileStatus> nodes_;
  std::map<std::string, std::string> links_;
};

class PathGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs_.Dir("/dev");
    fs_.Block("/dev/sdb", 8, 16);
    fs_.Block("/dev/sdc", 8, 32);
    fs_.Block("/dev/dm-0", 253, 0);
    fs_.Block("/dev/vdz", 252, 0);
    fs_.Char("/dev/mem");
    fs_.Char("/dev/null");
    fs_.Char("/dev/pts/0");
    fs_.Block("/dev/weird/nested", 9, 9);
    fs_.Link("/dev/mapper/vg-lv", "/dev/dm-0");
    fs_.Link("/dev/disk/by-id/evil", "/dev/mem");
    fs_.Dir("/srv/diff", 8, 16);  // on /dev/sdb
    fs_.Dir("/srv/diff2");
    fs_.Dir("/srv/diff/sub");
    fs_.File("/srv/diff/store.img", 8, 16);
    fs_.File("/srv/diff/other.img", 7, 0);
    fs_.File("/etc/passwd");
    fs_.Link("/srv/diff/escape", "/etc/passwd");
    fs_.Link("/srv/diff/loop", "/srv/diff/loop");
    auto guard = PathGuard::Create(&fs_, {{"/dev/*"}, {"/srv/diff", "/dev/sdc"}});
    ASSERT_TRUE(guard.ok()) << guard.status();
    guard_ = std::move(*guard);
  }
  absl::StatusCode Device(const std::string& path) {
    return guard_->CheckDevice(path).status().code();
  }
  absl::StatusCode Diff(const std::string& path, std::vector<std::string> devices = {"/dev/dm-0"}) {
    std::vector<GuardedDevice> guarded;
    for (const std::string& d : devices) guarded.push_back(*guard_->CheckDevice(d));
    return guard_->CheckDiffStorage(path, guarded).code();
  }
  FakeFileSystem fs_;
  std::unique_ptr<PathGuard> guard_;
};

TEST_F(PathGuardTest, Devices) {
  EXPECT_EQ(Device("/dev/sdb"), absl::StatusCode::kOk);
  EXPECT_EQ(Device("/dev/mapper/vg-lv"), absl::StatusCode::kOk) << "judged as /dev/dm-0";
  auto resolved = guard_->CheckDevice("/dev/mapper/vg-lv");
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(resolved->resolved, "/dev/dm-0");
  EXPECT_EQ(resolved->major, 253u);
  EXPECT_EQ(Device("/dev/mem"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Device("/dev/null"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Device("/dev/disk/by-id/evil"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Device("/dev/pts/0"), absl::StatusCode::kPermissionDenied) << "'*' stops at '/'";
  EXPECT_EQ(Device("/dev/weird/nested"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Device("/etc/passwd"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Device("/dev/../dev/sdb"), absl::StatusCode::kPermissionDenied) << "any '..'";
  EXPECT_EQ(Device("/dev/sdb/.."), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Device("/dev/..x"), absl::StatusCode::kNotFound) << "'..x' is a name";
  EXPECT_EQ(Device("/dev/sdq"), absl::StatusCode::kNotFound);
  EXPECT_EQ(Device("/srv/diff"), absl::StatusCode::kInvalidArgument) << "a directory";
  EXPECT_EQ(Device("/srv/diff/loop"), absl::StatusCode::kInvalidArgument) << "ELOOP";
}

TEST_F(PathGuardTest, DiffStorage) {
  EXPECT_EQ(Diff("/srv/diff"), absl::StatusCode::kOk);
  EXPECT_EQ(Diff("/srv/diff/sub"), absl::StatusCode::kOk);
  EXPECT_EQ(Diff("/srv/diff/other.img"), absl::StatusCode::kOk);
  EXPECT_EQ(Diff("/dev/sdc"), absl::StatusCode::kOk) << "an allowlisted block device";
  EXPECT_EQ(Diff("/srv/diff2"), absl::StatusCode::kPermissionDenied) << "not a string prefix";
  EXPECT_EQ(Diff("/srv/diff/escape"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Diff("/srv/diff/../diff2"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Diff("/etc/passwd"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Diff("/dev/sdb"), absl::StatusCode::kPermissionDenied) << "device, not in the list";
  EXPECT_EQ(Diff("/dev/null"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Diff("/srv/diff/none"), absl::StatusCode::kNotFound);
  // On, or being, a device of the same snapshot.
  EXPECT_EQ(Diff("/srv/diff/store.img", {"/dev/sdb"}), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Diff("/srv/diff", {"/dev/dm-0", "/dev/sdb"}), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Diff("/dev/sdc", {"/dev/sdc"}), absl::StatusCode::kFailedPrecondition);
}

TEST_F(PathGuardTest, BlockDeviceDiffStorageMustAlsoMatchTheDeviceAllowlist) {
  auto guard = PathGuard::Create(&fs_, {{"/dev/sd*"}, {"/dev/vdz"}});
  ASSERT_TRUE(guard.ok());
  EXPECT_EQ((*guard)->CheckDiffStorage("/dev/vdz", {}).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(PathGuardTest, AllowlistEntriesAreCheckedAtStartup) {
  EXPECT_FALSE(PathGuard::Create(&fs_, {{"dev/*"}, {}}).ok()) << "relative glob";
  EXPECT_FALSE(PathGuard::Create(&fs_, {{}, {"/srv/missing"}}).ok());
  EXPECT_FALSE(PathGuard::Create(&fs_, {{}, {"srv/diff"}}).ok());
  EXPECT_FALSE(PathGuard::Create(&fs_, {{}, {"/srv/diff/../diff2"}}).ok());
  EXPECT_FALSE(PathGuard::Create(&fs_, {{}, {"/etc/passwd"}}).ok()) << "a regular file";
  auto guard = PathGuard::Create(&fs_, {{}, {"/srv/diff/escape-dir"}});
  EXPECT_FALSE(guard.ok());
  fs_.Link("/srv/link", "/srv/diff2");
  guard = PathGuard::Create(&fs_, {{}, {"/srv/link"}});
  ASSERT_TRUE(guard.ok());
  EXPECT_EQ((*guard)->diff_storage_dirs(), std::vector<std::string>{"/srv/diff2"});
}

TEST(PathHelpersTest, ComponentWise) {
  EXPECT_TRUE(IsUnderDirectory("/srv/diff", "/srv/diff"));
  EXPECT_TRUE(IsUnderDirectory("/srv/diff/a/b", "/srv/diff"));
  EXPECT_FALSE(IsUnderDirectory("/srv/diff2", "/srv/diff"));
  EXPECT_FALSE(IsUnderDirectory("/srv", "/srv/diff"));
  EXPECT_TRUE(IsUnderDirectory("/anything", "/"));
  EXPECT_TRUE(HasDotDotComponent("/a/../b"));
  EXPECT_TRUE(HasDotDotComponent(".."));
  EXPECT_TRUE(HasDotDotComponent("/a/.."));
  EXPECT_FALSE(HasDotDotComponent("/a/..b/c../."));
}

}  // namespace
}  // namespace cbt::agent
