// Malformed requests across every RPC, through a real gRPC client and the real daemon: each gets
// its documented status code, the daemon keeps running, and nothing about trackers, snapshots or
// CBT changes.
#include <gtest/gtest.h>

#include <functional>

#include "api_calls.h"

namespace cbt::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kMax = UINT64_MAX;
const char kDev[] = "/dev/emu-a";         // tracked, in the snapshot held during the table
const char kUntracked[] = "/dev/emu-b";   // exists, not tracked
const char kMissing[] = "/dev/emu-none";  // does not exist
const char kFree[] = "/dev/emu-c";        // tracked, in no snapshot
const char kUnknownId[] = "0b6e1a52-3c1d-4f6e-9a55-6d1f1e2c3b4a";

using Code = grpc::StatusCode;

struct Case {
  std::string name;
  std::function<grpc::Status(AgentHarness&)> call;
  Code code;
};

grpc::Status TryCreate(AgentHarness& h,
                       const std::function<void(v1::CreateSnapshotRequest&)>& edit) {
  v1::CreateSnapshotRequest r;
  r.add_devices(kUntracked);
  r.mutable_diff_storage()->set_path(h.diff_dir());
  r.mutable_diff_storage()->set_limit_bytes(64 * kMiB);
  edit(r);
  return TryCreateSnapshot(h, r);
}
// Everything a malformed request must not change.
struct Observed {
  std::string trackers;
  std::string snapshots;
  std::string info;
  std::vector<uint8_t> map;
  bool operator==(const Observed&) const = default;
};

Observed Observe(AgentHarness& h) {
  Observed o;
  v1::ListTrackersResponse trackers;
  EXPECT_TRUE(h.agent().ListTrackers(Deadline().get(), {}, &trackers).ok());
  o.trackers = trackers.SerializeAsString();
  v1::ListSnapshotsResponse snapshots;
  EXPECT_TRUE(h.agent().ListSnapshots(Deadline().get(), {}, &snapshots).ok());
  for (const auto& s : snapshots.snapshots()) o.snapshots += s.id() + ";";
  o.info = Info(h, kDev).SerializeAsString();
  o.map = ReadMap(h, kDev);
  return o;
}

TEST(BadInputTest, EveryMalformedRequestGetsItsCodeAndChangesNothing) {
  AgentHarness h(
      "lk6.15", "6.15.0",
      {{kDev, 64 * kMiB, 8, 16}, {kUntracked, 64 * kMiB, 8, 32}, {kFree, 64 * kMiB, 8, 48}});
  ASSERT_TRUE(h.StartEmulator());
  ASSERT_TRUE(h.StartAgent()) << h.AgentLog();
  ASSERT_TRUE(TryAttach(h, kDev).ok());
  ASSERT_TRUE(TryAttach(h, kFree).ok());
  ASSERT_TRUE(h.kernel().WriteDevice(kDev, 5 * 65536, Pattern(4096, 9)).ok());
  v1::Snapshot held = CreateSnapshot(h, {kDev}, 64 * kMiB);
  const std::string generation = Info(h, kDev).generation_id();
  const uint64_t capacity = 64 * kMiB;
  const std::string long_path = "/dev/" + std::string(5000, 'x');
  const std::string nul_path = std::string("/dev/emu-a\0x", 12);
  const std::vector<std::pair<uint64_t, uint64_t>> too_many(65537, {0, 512});

  const std::vector<Case> cases = {
      // AttachTracker
      {"attach: empty path", [](auto& h) { return TryAttach(h, ""); }, Code::INVALID_ARGUMENT},
      {"attach: relative path", [](auto& h) { return TryAttach(h, "dev/emu-a"); },
       Code::INVALID_ARGUMENT},
      {"attach: NUL in path", [&](auto& h) { return TryAttach(h, nul_path); },
       Code::INVALID_ARGUMENT},
      {"attach: 5000-byte path", [&](auto& h) { return TryAttach(h, long_path); },
       Code::INVALID_ARGUMENT},
      {"attach: missing device", [](auto& h) { return TryAttach(h, kMissing); }, Code::NOT_FOUND},
      {"attach: a directory", [](auto& h) { return TryAttach(h, h.diff_dir()); },
       Code::INVALID_ARGUMENT},
      // DetachTracker
      {"detach: empty path", [](auto& h) { return TryDetach(h, ""); }, Code::INVALID_ARGUMENT},
      {"detach: relative path", [](auto& h) { return TryDetach(h, "emu-a"); },
       Code::INVALID_ARGUMENT},
      {"detach: untracked", [](auto& h) { return TryDetach(h, kUntracked); }, Code::NOT_FOUND},
      {"detach: missing", [](auto& h) { return TryDetach(h, kMissing); }, Code::NOT_FOUND},
      {"detach: device in a snapshot", [](auto& h) { return TryDetach(h, kDev); },
       Code::FAILED_PRECONDITION},
      // GetTracker
      {"tracker: empty path", [](auto& h) { return TryGetTracker(h, ""); }, Code::INVALID_ARGUMENT},
      {"tracker: untracked", [](auto& h) { return TryGetTracker(h, kUntracked); }, Code::NOT_FOUND},
      {"tracker: missing", [](auto& h) { return TryGetTracker(h, kMissing); }, Code::NOT_FOUND},
      // CreateSnapshot
      {"create: no devices",
       [](auto& h) { return TryCreate(h, [](auto& r) { r.clear_devices(); }); },
       Code::INVALID_ARGUMENT},
      {"create: 65 devices",
       [](auto& h) {
         return TryCreate(h, [](auto& r) {
           for (int i = 0; i < 64; ++i) r.add_devices(kUntracked);
         });
       },
       Code::INVALID_ARGUMENT},
      {"create: empty device",
       [](auto& h) { return TryCreate(h, [](auto& r) { r.set_devices(0, ""); }); },
       Code::INVALID_ARGUMENT},
      {"create: relative device",
       [](auto& h) { return TryCreate(h, [](auto& r) { r.set_devices(0, "emu-b"); }); },
       Code::INVALID_ARGUMENT},
      {"create: no diff storage",
       [](auto& h) { return TryCreate(h, [](auto& r) { r.clear_diff_storage(); }); },
       Code::INVALID_ARGUMENT},
      {"create: empty diff path",
       [](auto& h) {
         return TryCreate(h, [](auto& r) { r.mutable_diff_storage()->set_path(""); });
       },
       Code::INVALID_ARGUMENT},
      {"create: relative diff path",
       [](auto& h) {
         return TryCreate(h, [](auto& r) { r.mutable_diff_storage()->set_path("var/tmp"); });
       },
       Code::INVALID_ARGUMENT},
      {"create: limit 0",
       [](auto& h) {
         return TryCreate(h, [](auto& r) { r.mutable_diff_storage()->set_limit_bytes(0); });
       },
       Code::INVALID_ARGUMENT},
      {"create: limit 511",
       [](auto& h) {
         return TryCreate(h, [](auto& r) { r.mutable_diff_storage()->set_limit_bytes(511); });
       },
       Code::INVALID_ARGUMENT},
      {"create: limit 2^64-1",
       [](auto& h) {
         return TryCreate(h, [](auto& r) { r.mutable_diff_storage()->set_limit_bytes(kMax); });
       },
       Code::INVALID_ARGUMENT},
      {"create: untracked device", [](auto& h) { return TryCreate(h, [](auto&) {}); },
       Code::FAILED_PRECONDITION},
      {"create: missing device",
       [](auto& h) { return TryCreate(h, [](auto& r) { r.set_devices(0, kMissing); }); },
       Code::NOT_FOUND},
      {"create: duplicate device",
       [](auto& h) {
         return TryCreate(h, [](auto& r) {
           r.set_devices(0, kFree);
           r.add_devices(kFree);
         });
       },
       Code::INVALID_ARGUMENT},
      {"create: missing diff path",
       [](auto& h) {
         return TryCreate(h, [](auto& r) {
           r.set_devices(0, kFree);
           r.mutable_diff_storage()->set_path("/nonexistent/diff");
         });
       },
       Code::NOT_FOUND},
      {"create: device already in a snapshot",
       [](auto& h) { return TryCreate(h, [](auto& r) { r.set_devices(0, kDev); }); },
       Code::ALREADY_EXISTS},
      // ReleaseSnapshot / GetSnapshot / WatchSnapshotEvents
      {"release: empty id", [](auto& h) { return TryRelease(h, ""); }, Code::INVALID_ARGUMENT},
      {"release: not a uuid", [](auto& h) { return TryRelease(h, "zzz"); }, Code::INVALID_ARGUMENT},
      {"release: uuid in braces",
       [](auto& h) { return TryRelease(h, std::string("{") + kUnknownId + "}"); },
       Code::INVALID_ARGUMENT},
      {"release: unknown id", [](auto& h) { return TryRelease(h, kUnknownId); }, Code::NOT_FOUND},
      {"release: nil uuid",
       [](auto& h) { return TryRelease(h, "00000000-0000-0000-0000-000000000000"); },
       Code::NOT_FOUND},
      {"get snapshot: empty id", [](auto& h) { return TryGetSnapshot(h, ""); },
       Code::INVALID_ARGUMENT},
      {"get snapshot: 35 characters",
       [](auto& h) { return TryGetSnapshot(h, std::string(kUnknownId).substr(1)); },
       Code::INVALID_ARGUMENT},
      {"get snapshot: dashes misplaced",
       [](auto& h) { return TryGetSnapshot(h, "0b6e1a523-c1d-4f6e-9a55-6d1f1e2c3b4a"); },
       Code::INVALID_ARGUMENT},
      {"get snapshot: unknown id", [](auto& h) { return TryGetSnapshot(h, kUnknownId); },
       Code::NOT_FOUND},
      {"watch: malformed id", [](auto& h) { return TryWatch(h, "snap-1"); },
       Code::INVALID_ARGUMENT},
      {"watch: unknown id", [](auto& h) { return TryWatch(h, kUnknownId); }, Code::NOT_FOUND},
      // GetCbtInfo / ReadCbtMap
      {"info: empty path", [](auto& h) { return TryGetCbtInfo(h, ""); }, Code::INVALID_ARGUMENT},
      {"info: untracked", [](auto& h) { return TryGetCbtInfo(h, kUntracked); }, Code::NOT_FOUND},
      {"info: missing", [](auto& h) { return TryGetCbtInfo(h, kMissing); }, Code::NOT_FOUND},
      {"map: empty path", [](auto& h) { return TryReadMap(h, "", 0, 0); }, Code::INVALID_ARGUMENT},
      {"map: untracked", [](auto& h) { return TryReadMap(h, kUntracked, 0, 0); }, Code::NOT_FOUND},
      {"map: offset 2^64-1", [](auto& h) { return TryReadMap(h, kDev, kMax, 0); },
       Code::OUT_OF_RANGE},
      {"map: offset past the end", [](auto& h) { return TryReadMap(h, kDev, 1025, 1); },
       Code::OUT_OF_RANGE},
      {"map: length 2^64-1", [](auto& h) { return TryReadMap(h, kDev, 0, kMax); },
       Code::OUT_OF_RANGE},
      {"map: one byte past the end", [](auto& h) { return TryReadMap(h, kDev, 1024, 1); },
       Code::OUT_OF_RANGE},
      {"map: straddling the end", [](auto& h) { return TryReadMap(h, kDev, 1000, 25); },
       Code::OUT_OF_RANGE},
      // MarkDirty
      {"dirty: empty path",
       [](auto& h) {
         return TryMarkDirty(h, "", {{0, 512}});
       },
       Code::INVALID_ARGUMENT},
      {"dirty: untracked",
       [](auto& h) {
         return TryMarkDirty(h, kUntracked, {{0, 512}});
       },
       Code::NOT_FOUND},
      {"dirty: no ranges", [](auto& h) { return TryMarkDirty(h, kDev, {}); },
       Code::INVALID_ARGUMENT},
      {"dirty: 65537 ranges", [&](auto& h) { return TryMarkDirty(h, kDev, too_many); },
       Code::INVALID_ARGUMENT},
      {"dirty: length 0",
       [](auto& h) {
         return TryMarkDirty(h, kDev, {{0, 0}});
       },
       Code::INVALID_ARGUMENT},
      {"dirty: offset 2^64-1",
       [](auto& h) {
         return TryMarkDirty(h, kDev, {{kMax, 1}});
       },
       Code::OUT_OF_RANGE},
      {"dirty: length 2^64-1",
       [](auto& h) {
         return TryMarkDirty(h, kDev, {{0, kMax}});
       },
       Code::OUT_OF_RANGE},
      {"dirty: offset at the capacity",
       [&](auto& h) {
         return TryMarkDirty(h, kDev, {{capacity, 1}});
       },
       Code::OUT_OF_RANGE},
      {"dirty: straddling the end",
       [&](auto& h) {
         return TryMarkDirty(h, kDev, {{capacity - 512, 1024}});
       },
       Code::OUT_OF_RANGE},
      {"dirty: one bad range among good ones",
       [&](auto& h) {
         return TryMarkDirty(h, kDev, {{0, 512}, {capacity, 512}});
       },
       Code::OUT_OF_RANGE},
      // GetChangedExtents
      {"extents: empty path", [&](auto& h) { return Extents(h, "", generation, 0).status; },
       Code::INVALID_ARGUMENT},
      {"extents: untracked", [&](auto& h) { return Extents(h, kUntracked, generation, 0).status; },
       Code::NOT_FOUND},
      {"extents: empty generation", [](auto& h) { return Extents(h, kDev, "", 0).status; },
       Code::INVALID_ARGUMENT},
      {"extents: malformed generation",
       [](auto& h) { return Extents(h, kDev, "0b6e1a52", 0).status; }, Code::INVALID_ARGUMENT},
      {"extents: changes number 256",
       [&](auto& h) { return Extents(h, kDev, generation, 256).status; }, Code::INVALID_ARGUMENT},
      {"extents: changes number 2^32-1",
       [&](auto& h) { return Extents(h, kDev, generation, UINT32_MAX).status; },
       Code::INVALID_ARGUMENT},
      {"extents: base newer than the device",
       [&](auto& h) { return Extents(h, kDev, generation, 7).status; }, Code::INVALID_ARGUMENT},
      {"extents: another generation",
       [](auto& h) { return Extents(h, kDev, kUnknownId, 0).status; }, Code::FAILED_PRECONDITION},
      {"extents: start 2^64-1 (valid: empty and complete)",
       [&](auto& h) { return Extents(h, kDev, generation, 0, kMax).status; }, Code::OK},
  };
  ASSERT_GE(cases.size(), 50u);

  const Observed before = Observe(h);
  int matched = 0;
  for (const Case& c : cases) {
    const grpc::Status status = c.call(h);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    if (c.code != Code::OK) {
      EXPECT_FALSE(status.error_message().empty()) << c.name << ": no message";
    }
    matched += status.error_code() == c.code;
    ASSERT_EQ(h.agent_process().ExitedStatus(), -1) << "the daemon died at: " << c.name;
  }
  EXPECT_EQ(Observe(h), before) << "a malformed request changed the agent's state";
  std::printf("bad input: %d of %zu requests got their documented code\n", matched, cases.size());
  EXPECT_TRUE(TryRelease(h, held.id()).ok());
}

}  // namespace
}  // namespace cbt::testing
