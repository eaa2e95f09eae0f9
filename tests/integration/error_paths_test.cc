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

grpc::Status CbtInfoOf(AgentHarness& h, const std::string& device) {
  v1::GetCbtInfoRequest request;
  request.set_device(device);
  v1::CbtInfo response;
  return h.agent().GetCbtInfo(Deadline().get(), request, &response);
}

grpc::Status SnapshotGet(AgentHarness& h, const std::string& id) {
  v1::GetSnapshotRequest request;
  request.set_snapshot_id(id);
  v1::Snapshot response;
  return h.agent().GetSnapshot(Deadline().get(), request, &response);
}

grpc::Status MapRead(AgentHarness& h, uint64_t offset, uint64_t length) {
  v1::ReadCbtMapRequest request;
  request.set_device(kDev);
  request.set_offset(offset);
  request.set_length(length);
  auto context = Deadline();
  auto reader = h.agent().ReadCbtMap(context.get(), request);
  std::vector<v1::CbtMapChunk> chunks;
  return ReadAll(reader, &chunks);
}

grpc::Status Dirty(AgentHarness& h, std::vector<std::pair<uint64_t, uint64_t>> ranges) {
  v1::MarkDirtyRequest request;
  request.set_device(kDev);
  for (auto [offset, length] : ranges) {
    auto* r = request.add_ranges();
    r->set_offset(offset);
    r->set_length(length);
  }
  v1::MarkDirtyResponse response;
  return h.agent().MarkDirty(Deadline().get(), request, &response);
}

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
      {"empty device", [](auto& h) { return CbtInfoOf(h, ""); },
       grpc::StatusCode::INVALID_ARGUMENT, "empty"},
      {"relative device path", [](auto& h) { return CbtInfoOf(h, "dev/emu-a"); },
       grpc::StatusCode::INVALID_ARGUMENT, "absolute"},
      {"no such device", [](auto& h) { return CbtInfoOf(h, "/dev/emu-none"); },
       grpc::StatusCode::NOT_FOUND, "emu-none"},
      {"device not tracked", [](auto& h) { return CbtInfoOf(h, kUntracked); },
       grpc::StatusCode::NOT_FOUND, "emu-b"},
      {"malformed snapshot id", [](auto& h) { return SnapshotGet(h, "not-a-uuid"); },
       grpc::StatusCode::INVALID_ARGUMENT, "UUID"},
      {"unknown snapshot id", [&](auto& h) { return SnapshotGet(h, unknown_id); },
       grpc::StatusCode::NOT_FOUND, unknown_id},
      {"release unknown snapshot",
       [&](auto& h) {
         v1::ReleaseSnapshotRequest r;
         r.set_snapshot_id(unknown_id);
         v1::ReleaseSnapshotResponse out;
         return h.agent().ReleaseSnapshot(Deadline().get(), r, &out);
       },
       grpc::StatusCode::NOT_FOUND, ""},
      {"map offset past the end", [](auto& h) { return MapRead(h, 1025, 0); },
       grpc::StatusCode::OUT_OF_RANGE, "1025"},
      {"map range past the end", [](auto& h) { return MapRead(h, 1000, 25); },
       grpc::StatusCode::OUT_OF_RANGE, ""},
      {"dirty range past the device", [](auto& h) { return Dirty(h, {{64 * kMiB - 512, 1024}}); },
       grpc::StatusCode::OUT_OF_RANGE, "ranges[0]"},
      {"dirty range of length 0", [](auto& h) { return Dirty(h, {{0, 0}}); },
       grpc::StatusCode::INVALID_ARGUMENT, "length 0"},
      {"dirty with no ranges", [](auto& h) { return Dirty(h, {}); },
       grpc::StatusCode::INVALID_ARGUMENT, "empty"},
      {"dirty offset overflowing 64 bits",
       [](auto& h) { return Dirty(h, {{UINT64_MAX - 10, 100}}); },
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
       [](auto& h) {
         v1::DetachTrackerRequest r;
         r.set_device(kUntracked);
         v1::DetachTrackerResponse out;
         return h.agent().DetachTracker(Deadline().get(), r, &out);
       },
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
  v1::DetachTrackerRequest request;
  request.set_device(kDev);
  v1::DetachTrackerResponse response;
  grpc::Status busy = harness_->agent().DetachTracker(Deadline().get(), request, &response);
  EXPECT_EQ(busy.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << busy.error_message();
  Release(*harness_, s.id());
  EXPECT_TRUE(harness_->agent().DetachTracker(Deadline().get(), request, &response).ok());
  EXPECT_EQ(CbtInfoOf(*harness_, kDev).error_code(), grpc::StatusCode::NOT_FOUND);
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
