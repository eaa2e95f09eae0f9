#include "cbtctl/requests.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace cbt::cbtctl {
namespace {

Invocation Parsed(std::vector<std::string> argv) {
  ParseResult result = ParseCommandLine(argv);
  EXPECT_TRUE(result.error.ok()) << result.error;
  return result.invocation;
}

template <typename T>
std::string ErrorOf(const absl::StatusOr<T>& result) {
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(result.status().message());
}

TEST(RequestsTest, Echo) {
  EXPECT_EQ(BuildEchoRequest(Parsed({"echo"})).payload(), "");
  EXPECT_EQ(BuildEchoRequest(Parsed({"echo", "hello", "world"})).payload(), "hello world");
}

TEST(RequestsTest, DeviceAndSnapshotId) {
  EXPECT_EQ(DeviceArgument(Parsed({"attach", "/dev/sdb1"})).value(), "/dev/sdb1");
  EXPECT_EQ(DeviceArgument(Parsed({"cbt", "info", "/dev/sdb1"})).value(), "/dev/sdb1");
  EXPECT_TRUE(absl::StrContains(ErrorOf(DeviceArgument(Parsed({"detach", ""}))), "DEVICE"));
  EXPECT_EQ(SnapshotIdArgument(Parsed({"snapshot", "get", "0f1e"})).value(), "0f1e");
  EXPECT_EQ(BuildWatchRequest(Parsed({"watch"})).snapshot_id(), "");
  EXPECT_EQ(BuildWatchRequest(Parsed({"watch", "abc"})).snapshot_id(), "abc");
  EXPECT_EQ(BuildHealthRequest(Parsed({"health"})).service(), "");
  EXPECT_EQ(BuildHealthRequest(Parsed({"health", "cbtagent.v1.CbtAgent"})).service(),
            "cbtagent.v1.CbtAgent");
}

TEST(RequestsTest, SnapshotCreate) {
  auto request = BuildCreateSnapshotRequest(Parsed(
      {"snapshot", "create", "--diff-storage", "/var/tmp", "--limit", "64M", "/dev/a", "/dev/b"}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->devices_size(), 2);
  EXPECT_EQ(request->devices(1), "/dev/b");
  EXPECT_EQ(request->diff_storage().path(), "/var/tmp");
  EXPECT_EQ(request->diff_storage().limit_bytes(), 67108864u);
}

TEST(RequestsTest, SnapshotCreateUsageErrors) {
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(BuildCreateSnapshotRequest(Parsed({"snapshot", "create", "--limit", "1G", "/d"}))),
      "needs --diff-storage"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(BuildCreateSnapshotRequest(
          Parsed({"snapshot", "create", "--diff-storage", "/t", "/d"}))),
      "needs --limit"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(BuildCreateSnapshotRequest(
          Parsed({"snapshot", "create", "--diff-storage", "/t", "--limit", "1Q", "/d"}))),
      "--limit '1Q'"));
  for (const char* limit : {"0", "1000", "513"}) {
    EXPECT_TRUE(absl::StrContains(
        ErrorOf(BuildCreateSnapshotRequest(
            Parsed({"snapshot", "create", "--diff-storage", "/t", "--limit", limit, "/d"}))),
        "multiple of 512"))
        << limit;
  }
}

TEST(RequestsTest, CbtMap) {
  auto args = BuildMapArgs(Parsed({"cbt", "map", "/dev/sdb"}));
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->request.device(), "/dev/sdb");
  EXPECT_EQ(args->request.offset(), 0u);
  EXPECT_EQ(args->request.length(), 0u);
  EXPECT_EQ(args->output, "");

  args = BuildMapArgs(Parsed({"cbt", "map", "/dev/sdb", "--offset", "1K", "--length=4096",
                              "--output", "/tmp/map.bin"}));
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->request.offset(), 1024u);
  EXPECT_EQ(args->request.length(), 4096u);
  EXPECT_EQ(args->output, "/tmp/map.bin");

  EXPECT_TRUE(absl::StrContains(
      ErrorOf(BuildMapArgs(Parsed({"cbt", "map", "/dev/sdb", "--offset", "x"}))), "--offset"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(BuildMapArgs(Parsed({"cbt", "map", "/d", "--offset", "15E", "--length", "2E"}))),
      "too large"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(BuildMapArgs(Parsed({"cbt", "map", "/d", "--output="}))), "--output"));
}

TEST(RequestsTest, CbtDirty) {
  auto request = BuildMarkDirtyRequest(Parsed({"cbt", "dirty", "/dev/sdb", "0:512", "1G:64K"}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->device(), "/dev/sdb");
  ASSERT_EQ(request->ranges_size(), 2);
  EXPECT_EQ(request->ranges(0).offset(), 0u);
  EXPECT_EQ(request->ranges(0).length(), 512u);
  EXPECT_EQ(request->ranges(1).offset(), 1ull << 30);
  EXPECT_EQ(request->ranges(1).length(), 65536u);

  EXPECT_TRUE(absl::StrContains(
      ErrorOf(BuildMarkDirtyRequest(Parsed({"cbt", "dirty", "/dev/sdb", "4096"}))),
      "OFFSET:LENGTH"));
  EXPECT_TRUE(absl::StrContains(
      ErrorOf(BuildMarkDirtyRequest(Parsed({"cbt", "dirty", "/dev/sdb", "0:512", "5:0"}))),
      "length must be > 0"));
}

TEST(RequestsTest, CbtExtents) {
  auto request = BuildChangedExtentsRequest(
      Parsed({"cbt", "extents", "/dev/sdb", "--base-generation", "g-1", "--base-changes", "7",
              "--start", "1M", "--max", "100"}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->device(), "/dev/sdb");
  EXPECT_EQ(request->base_generation_id(), "g-1");
  EXPECT_EQ(request->base_changes_number(), 7u);
  EXPECT_EQ(request->start_offset(), 1u << 20);
  EXPECT_EQ(request->max_extents(), 100u);

  request = BuildChangedExtentsRequest(Parsed(
      {"cbt", "extents", "/dev/sdb", "--base-generation=g", "--base-changes=255"}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->start_offset(), 0u);
  EXPECT_EQ(request->max_extents(), 0u);
  EXPECT_EQ(request->base_changes_number(), 255u);
}

TEST(RequestsTest, CbtExtentsUsageErrors) {
  auto error = [](std::vector<std::string> extra) {
    std::vector<std::string> argv = {"cbt", "extents", "/dev/sdb"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return ErrorOf(BuildChangedExtentsRequest(Parsed(argv)));
  };
  EXPECT_TRUE(absl::StrContains(error({"--base-changes", "1"}), "needs --base-generation"));
  EXPECT_TRUE(absl::StrContains(error({"--base-generation", "g"}), "needs --base-changes"));
  for (const char* bad : {"256", "-1", "x", "1K", "+3"}) {
    EXPECT_TRUE(absl::StrContains(error({"--base-generation", "g", "--base-changes", bad}),
                                  "--base-changes"))
        << bad;
  }
  EXPECT_TRUE(absl::StrContains(
      error({"--base-generation", "g", "--base-changes", "1", "--max", "4294967296"}), "--max"));
  EXPECT_TRUE(absl::StrContains(
      error({"--base-generation", "g", "--base-changes", "1", "--start", "1Z"}), "--start"));
}

}  // namespace
}  // namespace cbt::cbtctl
