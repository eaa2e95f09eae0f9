#include <gtest/gtest.h>

#include <sstream>

#include "absl/strings/match.h"
#include "cbtctl/human_output.h"
#include "cbtctl/output.h"
#include "cbtctl/summaries.h"

namespace cbt::cbtctl {
namespace {

template <typename Writable>
std::string Written(const Writable& writable, int indent = 0) {
  std::ostringstream out;
  writable.Write(out, indent);
  return out.str();
}

TEST(FieldsTest, AlignsValues) {
  Fields fields;
  fields.Add("id", "x").Add("capacity", "67108864 (64.0 MiB)").Add("section", "");
  EXPECT_EQ(Written(fields), "id:        x\ncapacity:  67108864 (64.0 MiB)\nsection:\n");
  EXPECT_EQ(Written(Fields().Add("a", "1"), 2), "  a:  1\n");
}

TEST(TableTest, AlignsColumns) {
  Table table({"NAME", "SIZE", "X"}, {false, true, false});
  table.AddRow({"sdb", "1", "y"});
  table.AddRow({"nvme0n1", "1000", "zz"});
  EXPECT_EQ(Written(table),
            "NAME     SIZE  X\n"
            "sdb         1  y\n"
            "nvme0n1  1000  zz\n");
}

TEST(JsonTest, ProtoFieldNamesAndDefaults) {
  v1::CbtInfo info;
  info.set_device("/dev/sdb");
  info.set_capacity_bytes(1 << 20);
  const std::string json = ToJson(info);
  EXPECT_EQ(json.find('\n'), std::string::npos);
  EXPECT_TRUE(absl::StrContains(json, "\"capacity_bytes\":\"1048576\"")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"changes_number\":0")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"device\":\"/dev/sdb\"")) << json;
}

TEST(HumanOutputTest, EnumNames) {
  EXPECT_EQ(BackendName(v1::BACKEND_KIND_BLKSNAP), "blksnap");
  EXPECT_EQ(BackendName(v1::BACKEND_KIND_UBLK), "ublk");
  EXPECT_EQ(FlavourName(v1::BLKSNAP_FLAVOUR_LK615), "lk6.15");
  EXPECT_EQ(FlavourName(v1::BLKSNAP_FLAVOUR_VAL7), "val7");
  EXPECT_EQ(StateName(v1::SNAPSHOT_STATE_CORRUPTED), "corrupted");
  EXPECT_EQ(StateName(static_cast<v1::SnapshotState>(42)), "42");
}

TEST(HumanOutputTest, Time) {
  EXPECT_EQ(FormatTime(0), "unknown");
  EXPECT_EQ(FormatTime(1700000000123456789), "2023-11-14T22:13:20.123Z");
}

TEST(HumanOutputTest, Tracker) {
  v1::Tracker tracker;
  tracker.set_device("/dev/disk/by-id/x");
  tracker.set_resolved_path("/dev/sdb1");
  tracker.set_major(8);
  tracker.set_minor(17);
  tracker.set_capacity_bytes(67108864);
  tracker.set_io_path("/dev/sdb1");
  const std::string text = Written(TrackerFields(tracker));
  EXPECT_TRUE(absl::StrContains(text, "major:minor:    8:17\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "capacity:       67108864 (64.0 MiB)\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "snapshot:       none\n")) << text;
  EXPECT_FALSE(absl::StrContains(text, "image")) << text;
}

TEST(HumanOutputTest, Capabilities) {
  v1::Capabilities caps;
  caps.set_agent_version("0.1.0");
  caps.set_backend(v1::BACKEND_KIND_UBLK);
  caps.mutable_ublk()->set_features(0x42);
  caps.mutable_ublk()->set_chunk_size_bytes(65536);
  const std::string text = Written(CapabilitiesFields(caps));
  EXPECT_TRUE(absl::StrContains(text, "backend:")) << text;
  EXPECT_TRUE(absl::StrContains(text, "ublk\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "0x42")) << text;
  EXPECT_TRUE(absl::StrContains(text, "65536 (64.0 KiB)")) << text;
  EXPECT_FALSE(absl::StrContains(text, "blksnap flavour")) << text;
}

TEST(HumanOutputTest, Snapshot) {
  v1::Snapshot snapshot;
  snapshot.set_id("6c0b1c9e-0000-4000-8000-000000000001");
  snapshot.set_state(v1::SNAPSHOT_STATE_ACTIVE);
  snapshot.mutable_diff_storage()->set_path("/var/tmp");
  snapshot.mutable_diff_storage()->set_limit_bytes(1ull << 30);
  v1::SnapshotDevice* device = snapshot.add_devices();
  device->set_device("/dev/sdb1");
  device->set_image_path("/dev/blksnap-8-17");
  device->set_error_code(-28);
  device->set_error("No space left on device");
  std::ostringstream out;
  WriteSnapshot(snapshot, out);
  const std::string text = out.str();
  EXPECT_TRUE(absl::StrContains(text, "6c0b1c9e-0000-4000-8000-000000000001")) << text;
  EXPECT_TRUE(absl::StrContains(text, "1073741824 (1.0 GiB)")) << text;
  EXPECT_TRUE(absl::StrContains(text, "  /dev/sdb1:\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "-28 (No space left on device)")) << text;
}

TEST(HumanOutputTest, Events) {
  v1::SnapshotEvent event;
  event.set_snapshot_id("id-1");
  event.mutable_corrupted()->set_device("/dev/sdb1");
  event.mutable_corrupted()->set_major(8);
  event.mutable_corrupted()->set_minor(17);
  event.mutable_corrupted()->set_errno_value(28);
  event.mutable_corrupted()->set_error("No space left on device");
  EXPECT_EQ(FormatEvent(event),
            "unknown  id-1  corrupted /dev/sdb1 (8:17): errno 28 (No space left on device)");
  event.mutable_released();
  EXPECT_TRUE(absl::EndsWith(FormatEvent(event), "  id-1  released"));
  event.mutable_no_space()->set_requested_bytes(1 << 20);
  EXPECT_TRUE(absl::StrContains(FormatEvent(event), "1048576 (1.0 MiB)"));
}

TEST(MapHistogramTest, CountsChangeNumbers) {
  MapHistogram histogram;
  histogram.Add(std::string("\0\0\x03\xff", 4));
  histogram.Add(std::string(4, '\0'));
  EXPECT_EQ(histogram.blocks(), 8u);
  EXPECT_EQ(histogram.count(0), 6u);
  EXPECT_EQ(histogram.count(3), 1u);
  EXPECT_EQ(histogram.count(255), 1u);
  EXPECT_EQ(Written(histogram, 2),
            "  CHANGE  BLOCKS  PERCENT\n"
            "       0       6   75.00%\n"
            "       3       1   12.50%\n"
            "     255       1   12.50%\n");
}

TEST(ExtentsTotalsTest, SummaryOfAStream) {
  ExtentsTotals totals;
  v1::ChangedExtentsChunk chunk;
  auto* extent = chunk.add_extents();
  extent->set_offset(0);
  extent->set_length(65536);
  totals.Add(chunk);
  chunk.Clear();
  extent = chunk.add_extents();
  extent->set_offset(1 << 20);
  extent->set_length(65536);
  chunk.set_complete(true);
  chunk.set_changed_bytes(131072);
  chunk.set_generation_id("gen-2");
  chunk.set_changes_number(9);
  totals.Add(chunk);
  EXPECT_EQ(totals.extents(), 2u);
  EXPECT_EQ(totals.changed_bytes(), 131072u);
  EXPECT_EQ(totals.scanned_to(), (1u << 20) + 65536);
  const std::string text = Written(totals.Summary(1 << 24));
  EXPECT_TRUE(absl::StrContains(text, "extents:               2\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "131072 (128.0 KiB)")) << text;
  EXPECT_TRUE(absl::StrContains(text, "0.78% of 16777216 (16.0 MiB)")) << text;
  EXPECT_TRUE(absl::StrContains(text, "complete:              yes")) << text;
  EXPECT_TRUE(absl::StrContains(text, "next base generation:  gen-2")) << text;
  EXPECT_TRUE(absl::StrContains(text, "next base changes:     9")) << text;
  EXPECT_FALSE(absl::StrContains(Written(totals.Summary(std::nullopt)), "of capacity"));
}

TEST(ExtentsTotalsTest, IncompleteTellsWhereToContinue) {
  ExtentsTotals totals;
  v1::ChangedExtentsChunk chunk;
  chunk.set_next_offset(4096);
  totals.Add(chunk);
  EXPECT_TRUE(absl::StrContains(Written(totals.Summary(std::nullopt)),
                                "no: continue with --start 4096"));
}

TEST(ExtentLineTest, Columns) {
  EXPECT_EQ(FormatExtentLine(1048576, 65536),
            "1048576 (1.0 MiB)             65536 (64.0 KiB)");
  EXPECT_TRUE(absl::StartsWith(ExtentHeader(), "OFFSET "));
}

}  // namespace
}  // namespace cbt::cbtctl
