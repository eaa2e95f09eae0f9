// Each error path of the API through the real daemon: the documented gRPC code, a message that
// names what went wrong, and a daemon that keeps serving.
#include <gtest/gtest.h>

#include <functional>

#include "api_calls.h"

namespace cbt::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
const char kDev[] = "/dev/emu-a";
const char kUntracked[] = "/dev/emu-b";

struct ErrorCase {
  std::string name;
  std::function<grpc::Status(AgentHarness&)> call;
  grpc::StatusCode code;
  std::string message_contains;
};

class ErrorPathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    harness_ = std::make_unique<AgentHarness>(
        "lk6.15", "6.15.0",
        std::vector<EmulatedDevice>{{kDev, 64 * kMiB, 8, 16}, {kUntracked, 64 * kMiB, 8, 32}});
    ASSERT_TRUE(harness_->StartEmulator());
    ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();
    Attach(*harness_, kDev);
  }
  std::unique_ptr<AgentHarness> harness_;
};

TEST_F(ErrorPathsTest, EachErrorHasItsCode) {
  const std::string generation = Info(*harness_, kDev).generation_id();
  const std::string unknown_id = "0b6e1a52-3c1d-4f6e-9a55-6d1f1e2c3b4a";
  std::vector<ErrorCase> cases = {
      {"empty device", [](auto& h) { return TryGetCbtInfo(h, ""); },
       grpc::StatusCode::INVALID_ARGUMENT, "empty"},
      {"relative device path", [](auto& h) { return TryGetCbtInfo(h, "dev/emu-a"); },
       grpc::StatusCode::INVALID_ARGUMENT, "absolute"},
      {"no such device", [](auto& h) { return TryGetCbtInfo(h, "/dev/emu-none"); },
       grpc::StatusCode::NOT_FOUND, "emu-none"},
      {"device not tracked", [](auto& h) { return TryGetCbtInfo(h, kUntracked); },
       grpc::StatusCode::NOT_FOUND, "emu-b"},
      {"malformed snapshot id", [](auto& h) { return TryGetSnapshot(h, "not-a-uuid"); },
       grpc::StatusCode::INVALID_ARGUMENT, "UUID"},
      {"unknown snapshot id", [&](auto& h) { return TryGetSnapshot(h, unknown_id); },
       grpc::StatusCode::NOT_FOUND, unknown_id},
      {"release unknown snapshot",
       [&](auto& h) { return TryRelease(h, unknown_id); },
       grpc::StatusCode::NOT_FOUND, ""},
      {"map offset past the end", [](auto& h) { return TryReadMap(h, kDev, 1025, 0); },
       grpc::StatusCode::OUT_OF_RANGE, "1025"},
      {"map range past the end", [](auto& h) { return TryReadMap(h, kDev, 1000, 25); },
       grpc::StatusCode::OUT_OF_RANGE, ""},
      {"dirty range past the device", [](auto& h) { return TryMarkDirty(h, kDev, {{64 * kMiB - 512, 1024}}); },
       grpc::StatusCode::OUT_OF_RANGE, "ranges[0]"},
      {"dirty range of length 0", [](auto& h) { return TryMarkDirty(h, kDev, {{0, 0}}); },
       grpc::StatusCode::INVALID_ARGUMENT, "length 0"},
      {"dirty with no ranges", [](auto& h) { return TryMarkDirty(h, kDev, {}); },
       grpc::StatusCode::INVALID_ARGUMENT, "empty"},
      {"dirty offset overflowing 64 bits",
       [](auto& h) { return TryMarkDirty(h, kDev, {{UINT64_MAX - 10, 100}}); },
       grpc::StatusCode::OUT_OF_RANGE, ""},
      {"snapshot without devices",
       [](auto& h) { return TryCreateSnapshot(h, {}, kMiB, ""); },
       grpc::StatusCode::INVALID_ARGUMENT, "devices"},
      {"snapshot with zero limit",
       [](auto& h) { return TryCreateSnapshot(h, {kDev}, 0, ""); },
       grpc::StatusCode::INVALID_ARGUMENT, "limit"},
      {"snapshot limit not sector aligned",
       [](auto& h) { return TryCreateSnapshot(h, {kDev}, 1000, ""); },
       grpc::StatusCode::INVALID_ARGUMENT, "512"},
      {"snapshot of an untracked device",
       [](auto& h) { return TryCreateSnapshot(h, {kUntracked}, 64 * kMiB, ""); },
       grpc::StatusCode::FAILED_PRECONDITION, "emu-b"},
      {"snapshot with a missing diff storage",
       [](auto& h) { return TryCreateSnapshot(h, {kDev}, 64 * kMiB, "/nonexistent/dir"); },
       grpc::StatusCode::NOT_FOUND, "/nonexistent/dir"},
      {"extents with a malformed generation",
       [](auto& h) { return Extents(h, kDev, "xyz", 0).status; },
       grpc::StatusCode::INVALID_ARGUMENT, "base_generation_id"},
      {"extents with a changes number over 255",
       [&](auto& h) { return Extents(h, kDev, generation, 256).status; },
       grpc::StatusCode::INVALID_ARGUMENT, "256"},
      {"extents from the future",
       [&](auto& h) { return Extents(h, kDev, generation, 7).status; },
       grpc::StatusCode::INVALID_ARGUMENT, "newer"},
      {"extents of another generation",
       [&](auto& h) { return Extents(h, kDev, unknown_id, 0).status; },
       grpc::StatusCode::FAILED_PRECONDITION, "full backup required"},
      {"detach an untracked device",
       [](auto& h) { return TryDetach(h, kUntracked); },
       grpc::StatusCode::NOT_FOUND, ""},
  };
  for (const ErrorCase& c : cases) {
    grpc::Status status = c.call(*harness_);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(c.message_contains), std::string::npos)
        << c.name << ": '" << status.error_message() << "' lacks '" << c.message_contains << "'";
  }
  // Nothing changed and the daemon still serves.
  EXPECT_EQ(Info(*harness_, kDev).generation_id(), generation);
  EXPECT_EQ(harness_->agent_process().ExitedStatus(), -1);
}

TEST_F(ErrorPathsTest, DetachWhileInSnapshotIsRefusedThenWorks) {
  v1::Snapshot s = CreateSnapshot(*harness_, {kDev}, 64 * kMiB);
  grpc::Status busy = TryDetach(*harness_, kDev);
  EXPECT_EQ(busy.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << busy.error_message();
  Release(*harness_, s.id());
  EXPECT_TRUE(TryDetach(*harness_, kDev).ok());
  EXPECT_EQ(TryGetCbtInfo(*harness_, kDev).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ErrorPathsTest, DuplicateDeviceInOneSnapshotIsRefused) {
  grpc::Status status = TryCreateSnapshot(*harness_, {kDev, kDev}, 64 * kMiB, "");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  v1::ListSnapshotsResponse list;
  ASSERT_TRUE(harness_->agent().ListSnapshots(Deadline().get(), {}, &list).ok());
  EXPECT_EQ(list.snapshots_size(), 0) << "nothing left behind";
}

}  // namespace
}  // namespace cbt::testing
