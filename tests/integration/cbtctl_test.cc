// cbtctl against the real daemon: the commands a person types, their output and exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>

#include "api_calls.h"
#include "google/protobuf/util/json_util.h"

namespace cbt::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
const char kDev[] = "/dev/emu-a";

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

class CbtctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    harness_ = std::make_unique<AgentHarness>(
        "lk6.15", "6.15.0", std::vector<EmulatedDevice>{{kDev, 64 * kMiB, 8, 16}});
    ASSERT_TRUE(harness_->StartEmulator());
    ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();
  }
  CommandResult Run(const std::string& args) {
    const std::string command = std::string(CBTCTL_BINARY) + " --address unix:" +
                                harness_->agent_socket() + " " + args + " 2>&1";
    CommandResult result;
    FILE* pipe = ::popen(command.c_str(), "r");
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
    const int status = ::pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
  }
  std::unique_ptr<AgentHarness> harness_;
};

TEST_F(CbtctlTest, IncrementalBackupCycle) {
  CommandResult attach = Run(std::string("attach ") + kDev);
  ASSERT_EQ(attach.exit_code, 0) << attach.output;
  EXPECT_NE(attach.output.find("8:16"), std::string::npos) << attach.output;

  ASSERT_TRUE(harness_->kernel().WriteDevice(kDev, 3 * 65536, Pattern(8192, 1)).ok());
  CommandResult create =
      Run("snapshot create --diff-storage " + harness_->diff_dir() + " --limit 64M " + kDev);
  ASSERT_EQ(create.exit_code, 0) << create.output;
  EXPECT_NE(create.output.find("/dev/blksnap-8-16"), std::string::npos) << create.output;

  CommandResult info = Run(std::string("--json cbt info ") + kDev);
  ASSERT_EQ(info.exit_code, 0) << info.output;
  v1::CbtInfo parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(info.output, &parsed).ok())
      << info.output;
  EXPECT_EQ(parsed.block_count(), 1024u);
  EXPECT_EQ(parsed.changes_number(), 1u);

  CommandResult extents = Run(std::string("cbt extents ") + kDev + " --base-generation " +
                              parsed.generation_id() + " --base-changes 0");
  ASSERT_EQ(extents.exit_code, 0) << extents.output;
  EXPECT_NE(extents.output.find("196608"), std::string::npos) << "extent at block 3\n"
                                                              << extents.output;

  CommandResult snapshots = Run("--json snapshots");
  ASSERT_EQ(snapshots.exit_code, 0) << snapshots.output;
  v1::ListSnapshotsResponse list;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(snapshots.output, &list).ok())
      << snapshots.output;
  ASSERT_EQ(list.snapshots_size(), 1);
  CommandResult release = Run("snapshot release " + list.snapshots(0).id());
  EXPECT_EQ(release.exit_code, 0) << release.output;
}

TEST_F(CbtctlTest, ErrorsAreReadableWithDistinctExitCodes) {
  CommandResult missing = Run("cbt info /dev/emu-none");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("NOT_FOUND"), std::string::npos) << missing.output;

  CommandResult usage = Run("snapshot create --limit 1000 /dev/emu-a");
  EXPECT_EQ(usage.exit_code, 2) << usage.output;

  Run(std::string("attach ") + kDev);
  CommandResult stale = Run(std::string("cbt extents ") + kDev +
                            " --base-generation 0b6e1a52-3c1d-4f6e-9a55-6d1f1e2c3b4a "
                            "--base-changes 0");
  EXPECT_EQ(stale.exit_code, 1);
  EXPECT_NE(stale.output.find("full backup required"), std::string::npos) << stale.output;

  CommandResult health = Run("health");
  EXPECT_EQ(health.exit_code, 0) << health.output;
  EXPECT_NE(health.output.find("SERVING"), std::string::npos) << health.output;
}

}  // namespace
}  // namespace cbt::testing
