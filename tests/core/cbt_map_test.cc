// CbtMap behaviour, checked against blksnap's cbt_map.c and the facts observed on the real
// module (docs: blksnap.md §3, blksnap-real-module.md §3-4).
#include "core/cbt_map.h"

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace cbt {
namespace {

using absl::StatusCode;

// With the default parameters every device up to 128 GiB has 64 KiB blocks of 128 sectors.
constexpr uint64_t kSpb = 128;

std::unique_ptr<CbtMap> MakeMap(uint64_t capacity_sectors, const TrackingParams& params = {}) {
  auto map = CbtMap::Create(capacity_sectors, params);
  EXPECT_TRUE(map.ok()) << map.status();
  return map.ok() ? std::move(*map) : nullptr;
}

std::vector<uint8_t> ReadAll(const CbtMap& map) {
  std::vector<uint8_t> bytes(map.geometry().block_count);
  absl::Status status = map.ReadMap(0, bytes.size(), bytes.data());
  EXPECT_TRUE(status.ok()) << status;
  return bytes;
}

std::vector<uint8_t> WriteMapOf(const CbtMap& map) { return map.ExportState().write_map; }

// A map of `count` bytes, all zero except the listed (index, value) pairs.
std::vector<uint8_t> Bytes(uint64_t count, std::initializer_list<std::pair<uint64_t, uint8_t>> set) {
  std::vector<uint8_t> bytes(count, 0);
  for (auto [index, value] : set) bytes.at(index) = value;
  return bytes;
}

bool AllZero(const std::vector<uint8_t>& bytes) {
  for (uint8_t b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Creation

TEST(CbtMapTest, FreshMap) {
  auto map = MakeMap(2 * 1024 * 1024);  // 1 GiB
  ASSERT_NE(map, nullptr);
  const CbtInfo info = map->Info();
  EXPECT_EQ(info.capacity_bytes, uint64_t{1} << 30);
  EXPECT_EQ(info.block_size, 65536u);
  EXPECT_EQ(info.block_count, 16384u);
  EXPECT_EQ(info.changes_number, 0);
  EXPECT_FALSE(info.corrupted);
  EXPECT_FALSE(map->corrupted());
  EXPECT_FALSE(info.generation_id.is_nil());
  EXPECT_EQ(info.generation_id.bytes[6] >> 4, 4);
  EXPECT_EQ(info.generation_id.bytes[8] & 0xC0, 0x80);

  const CbtMapState state = map->ExportState();
  EXPECT_EQ(state.snap_number_previous, 0);
  EXPECT_EQ(state.snap_number_active, 1);
  EXPECT_EQ(state.generation_id, info.generation_id);
  EXPECT_FALSE(state.corrupted);
  EXPECT_EQ(state.geometry.block_count, 16384u);
  EXPECT_EQ(state.geometry.block_shift, 16u);
  EXPECT_EQ(state.geometry.capacity_sectors, 2u * 1024 * 1024);
  ASSERT_EQ(state.read_map.size(), 16384u);
  ASSERT_EQ(state.write_map.size(), 16384u);
  EXPECT_TRUE(AllZero(state.read_map));
  EXPECT_TRUE(AllZero(state.write_map));
  EXPECT_TRUE(AllZero(ReadAll(*map)));

  // Two maps never share a generation.
  auto other = MakeMap(2 * 1024 * 1024);
  ASSERT_NE(other, nullptr);
  EXPECT_NE(other->Info().generation_id, info.generation_id);
}

TEST(CbtMapTest, CreateRejectsWhatTheGeometryRejects) {
  EXPECT_EQ(CbtMap::Create(UINT64_MAX).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CbtMap::Create(1024, {.minimum_shift = 8}).status().code(),
            StatusCode::kInvalidArgument);
  // More than 2^32 blocks is refused up front (sector-sized blocks, never grown).
  TrackingParams tiny{.minimum_shift = 9, .maximum_count = 1, .maximum_shift = 9};
  EXPECT_EQ(CbtMap::Create((uint64_t{1} << 32) + 1, tiny).status().code(),
            StatusCode::kResourceExhausted);
}

TEST(CbtMapTest, ZeroCapacityMap) {
  auto map = MakeMap(0);
  ASSERT_NE(map, nullptr);
  EXPECT_EQ(map->Info().block_count, 0u);
  EXPECT_TRUE(map->ReadMap(0, 0, nullptr).ok());
  map->Switch();
  EXPECT_EQ(map->Info().changes_number, 1);
  auto page = map->ChangedExtents(map->Info().generation_id, 0, 0, 0);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->extents.empty());
  EXPECT_TRUE(page->complete);
  EXPECT_EQ(page->next_offset, 0u);
  // Any write lies past a map of no blocks.
  EXPECT_EQ(map->Set(0, 1).code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(map->corrupted());
}

// ---------------------------------------------------------------------------------------------
// Set

TEST(CbtMapTest, ZeroLengthSetIsANoOp) {
  auto map = MakeMap(1000);
  ASSERT_NE(map, nullptr);
  EXPECT_TRUE(map->Set(0, 0).ok());
  EXPECT_TRUE(map->Set(999, 0).ok());
  EXPECT_TRUE(map->Set(UINT64_MAX, 0).ok());  // even far past the end
  EXPECT_TRUE(map->SetBoth(UINT64_MAX, 0).ok());
  EXPECT_FALSE(map->corrupted());
  EXPECT_TRUE(AllZero(WriteMapOf(*map)));
  map->Switch();
  EXPECT_TRUE(AllZero(ReadAll(*map)));
}

TEST(CbtMapTest, OneSectorWriteMarksItsBlockOnly) {
  auto map = MakeMap(16 * kSpb);  // 1 MiB, 16 blocks
  ASSERT_NE(map, nullptr);
  ASSERT_TRUE(map->Set(130, 1).ok());  // sector 130 is in block 1
  EXPECT_EQ(WriteMapOf(*map), Bytes(16, {{1, 1}}));
  EXPECT_TRUE(AllZero(ReadAll(*map))) << "the read map only changes at a switch";
  map->Switch();
  EXPECT_EQ(ReadAll(*map), Bytes(16, {{1, 1}}));
}

TEST(CbtMapTest, WritesCrossingBlockBoundaries) {
  auto map = MakeMap(16 * kSpb);
  ASSERT_NE(map, nullptr);
  ASSERT_TRUE(map->Set(127, 2).ok());                // last sector of 0, first of 1
  ASSERT_TRUE(map->Set(5 * kSpb - 1, 2 * kSpb + 2).ok());  // sectors 639..896: blocks 4..7
  ASSERT_TRUE(map->Set(10 * kSpb, kSpb).ok());       // exactly block 10
  ASSERT_TRUE(map->Set(12 * kSpb, kSpb + 1).ok());   // block 12 and one sector of 13
  ASSERT_TRUE(map->Set(15 * kSpb + 127, 1).ok());    // the very last sector
  EXPECT_EQ(WriteMapOf(*map), Bytes(16, {{0, 1},
                                         {1, 1},
                                         {4, 1},
                                         {5, 1},
                                         {6, 1},
                                         {7, 1},
                                         {10, 1},
                                         {12, 1},
                                         {13, 1},
                                         {15, 1}}));
}

TEST(CbtMapTest, WriteIntoTheTailOfAPartialLastBlock) {
  // 1000 sectors: blocks 0..6 are whole, block 7 covers sectors 896..1023 but the device ends
  // at 1000. The kernel checks by block index, so sectors 1000..1023 are "inside".
  auto map = MakeMap(1000);
  ASSERT_NE(map, nullptr);
  ASSERT_EQ(map->Info().block_count, 8u);
  EXPECT_TRUE(map->Set(999, 1).ok());
  EXPECT_TRUE(map->Set(1000, 24).ok());  // entirely past the capacity, still block 7
  EXPECT_TRUE(map->Set(1023, 1).ok());
  EXPECT_FALSE(map->corrupted());
  EXPECT_EQ(WriteMapOf(*map), Bytes(8, {{7, 1}}));
  // One sector further is block 8: out of range.
  EXPECT_EQ(map->Set(1024, 1).code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(map->corrupted());
}

TEST(CbtMapTest, WritePastTheEndCorruptsTheMapUntilReset) {
  auto map = MakeMap(1000);
  ASSERT_NE(map, nullptr);
  ASSERT_TRUE(map->Set(0, 1).ok());
  map->Switch();  // read map: block 0 = 1
  const GenerationId generation = map->Info().generation_id;

  // Sectors 900..1099: block 7 lies inside, block 8 does not.
  const absl::Status status = map->Set(900, 200);
  EXPECT_EQ(status.code(), StatusCode::kOutOfRange) << status;
  EXPECT_TRUE(map->corrupted());
  EXPECT_TRUE(map->Info().corrupted);
  // As the kernel does, the in-range part was marked before the error.
  EXPECT_EQ(WriteMapOf(*map), Bytes(8, {{0, 1}, {7, 2}}));
  EXPECT_TRUE(map->ExportState().corrupted);

  // Everything that touches the map now fails with DataLoss.
  EXPECT_EQ(map->Set(0, 1).code(), StatusCode::kDataLoss);
  EXPECT_EQ(map->Set(900, 200).code(), StatusCode::kDataLoss);
  EXPECT_EQ(map->SetBoth(0, 1).code(), StatusCode::kDataLoss);
  uint8_t byte = 0;
  EXPECT_EQ(map->ReadMap(0, 1, &byte).code(), StatusCode::kDataLoss);
  EXPECT_EQ(map->ReadMap(0, 0, nullptr).code(), StatusCode::kDataLoss);
  EXPECT_EQ(map->ChangedExtents(generation, 0, 0, 0).status().code(), StatusCode::kDataLoss);
  // The rejected Set did not mark anything.
  EXPECT_EQ(WriteMapOf(*map), Bytes(8, {{0, 1}, {7, 2}}));
  // A switch does not clear corruption.
  map->Switch();
  EXPECT_TRUE(map->corrupted());
  EXPECT_EQ(map->Set(0, 1).code(), StatusCode::kDataLoss);

  ASSERT_TRUE(map->Reset(1000).ok());
  EXPECT_FALSE(map->corrupted());
  EXPECT_FALSE(map->Info().corrupted);
  EXPECT_NE(map->Info().generation_id, generation);
  EXPECT_TRUE(map->Set(0, 1).ok());
  EXPECT_TRUE(map->ReadMap(0, 1, &byte).ok());
  EXPECT_EQ(byte, 0);
}

TEST(CbtMapTest, WriteStartingPastTheEndMarksNothing) {
  auto map = MakeMap(1000);
  ASSERT_NE(map, nullptr);
  EXPECT_EQ(map->Set(1'000'000, 8).code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(map->corrupted());
  EXPECT_TRUE(AllZero(WriteMapOf(*map)));
}

TEST(CbtMapTest, SixtyFourBitOverflowIsAnErrorAndCorrupts) {
  {
    // The range wraps past 2^64 and starts far beyond the map.
    auto map = MakeMap(1000);
    ASSERT_NE(map, nullptr);
    EXPECT_EQ(map->Set(UINT64_MAX - 3, 8).code(), StatusCode::kOutOfRange);
    EXPECT_TRUE(map->corrupted());
    EXPECT_TRUE(AllZero(WriteMapOf(*map)));
  }
  {
    // The range starts inside (block 1) and wraps: the rest of the map is marked, then error.
    // (The kernel would compute a wrapped last block and silently mark nothing.)
    auto map = MakeMap(1000);
    ASSERT_NE(map, nullptr);
    EXPECT_EQ(map->Set(200, UINT64_MAX).code(), StatusCode::kOutOfRange);
    EXPECT_TRUE(map->corrupted());
    EXPECT_EQ(WriteMapOf(*map),
              Bytes(8, {{1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {6, 1}, {7, 1}}));
  }
  {
    // SetBoth: same error, but the map is not corrupted.
    auto map = MakeMap(1000);
    ASSERT_NE(map, nullptr);
    EXPECT_EQ(map->SetBoth(UINT64_MAX - 3, 8).code(), StatusCode::kOutOfRange);
    EXPECT_FALSE(map->corrupted());
  }
  {
    // Exactly up to the last representable sector: no wrap, but still far out of range.
    auto map = MakeMap(1000);
    ASSERT_NE(map, nullptr);
    EXPECT_EQ(map->Set(UINT64_MAX - 9, 10).code(), StatusCode::kOutOfRange);
    EXPECT_TRUE(map->corrupted());
  }
}

TEST(CbtMapTest, MarksOnlyRaiseANumber) {
  auto map = MakeMap(4 * kSpb);
  ASSERT_NE(map, nullptr);
  ASSERT_TRUE(map->Set(0, 1).ok());  // block 0 = 1
  map->Switch();
  map->Switch();                     // active = 3
  ASSERT_TRUE(map->Set(kSpb, 1).ok());  // block 1 = 3
  EXPECT_EQ(WriteMapOf(*map), Bytes(4, {{0, 1}, {1, 3}}));
  ASSERT_TRUE(map->Set(0, 2 * kSpb).ok());  // both to 3, nothing above
  EXPECT_EQ(WriteMapOf(*map), Bytes(4, {{0, 3}, {1, 3}}));
}

// ---------------------------------------------------------------------------------------------
// Read map and switch

TEST(CbtMapTest, ReadMapIsFrozenBetweenSwitches) {
  auto map = MakeMap(16 * kSpb);
  ASSERT_NE(map, nullptr);
  ASSERT_TRUE(map->Set(0, 1).ok());
  ASSERT_TRUE(map->Set(3 * kSpb, 1).ok());
  EXPECT_TRUE(AllZero(ReadAll(*map))) << "nothing before the first switch";

  map->Switch();
  EXPECT_EQ(map->Info().changes_number, 1);
  EXPECT_EQ(ReadAll(*map), Bytes(16, {{0, 1}, {3, 1}}));

  ASSERT_TRUE(map->Set(3 * kSpb, 1).ok());
  ASSERT_TRUE(map->Set(9 * kSpb, 1).ok());
  EXPECT_EQ(ReadAll(*map), Bytes(16, {{0, 1}, {3, 1}})) << "writes after a switch are invisible";

  map->Switch();
  EXPECT_EQ(map->Info().changes_number, 2);
  EXPECT_EQ(ReadAll(*map), Bytes(16, {{0, 1}, {3, 2}, {9, 2}}));

  // A switch with no writes in between keeps the numbers.
  map->Switch();
  EXPECT_EQ(map->Info().changes_number, 3);
  EXPECT_EQ(ReadAll(*map), Bytes(16, {{0, 1}, {3, 2}, {9, 2}}));
}

TEST(CbtMapTest, SwitchCopiesWriteMapToReadMapAndAdvancesNumbers) {
  auto map = MakeMap(64 * kSpb);
  ASSERT_NE(map, nullptr);
  const GenerationId generation = map->Info().generation_id;
  for (int k = 1; k <= 20; ++k) {
    ASSERT_TRUE(map->Set(static_cast<uint64_t>(k) * 3 * kSpb / 2, 1).ok());
    map->Switch();
    const CbtMapState state = map->ExportState();
    EXPECT_EQ(state.snap_number_previous, k);
    EXPECT_EQ(state.snap_number_active, k + 1);
    EXPECT_EQ(map->Info().changes_number, k);
    EXPECT_EQ(state.read_map, state.write_map);
    EXPECT_EQ(state.read_map, ReadAll(*map));
    EXPECT_EQ(map->Info().generation_id, generation);
  }
}

// The real module: block 0, 16, 160, 1008 written before TAKE #1 read back as 1; writes after
// it (16, 320) and CBTDIRTY (500, 600) show as 2 after TAKE #2 (blksnap-real-module.md #27, #30).
TEST(CbtMapTest, RealModuleTwoTakesScenario) {
  auto map = MakeMap(64 * 1024 * 2);  // 64 MiB loop device
  ASSERT_NE(map, nullptr);
  ASSERT_EQ(map->Info().block_count, 1024u);
  for (uint64_t block : {0, 16, 160, 1008}) ASSERT_TRUE(map->Set(block * kSpb, 8).ok());
  map->Switch();  // TAKE #1
  EXPECT_EQ(map->Info().changes_number, 1);
  std::vector<uint8_t> expected = Bytes(1024, {{0, 1}, {16, 1}, {160, 1}, {1008, 1}});
  EXPECT_EQ(ReadAll(*map), expected);

  for (uint64_t block : {16, 320}) ASSERT_TRUE(map->Set(block * kSpb + 4, 8).ok());
  ASSERT_TRUE(map->SetBoth(500 * kSpb, kSpb).ok());  // block 500 whole
  ASSERT_TRUE(map->SetBoth(600 * kSpb + 7, 1).ok());  // one sector in block 600
  // CBTDIRTY shows at once in the current read map with the current changes number.
  expected[500] = 1;
  expected[600] = 1;
  EXPECT_EQ(ReadAll(*map), expected);

  map->Switch();  // TAKE #2
  EXPECT_EQ(map->Info().changes_number, 2);
  expected = Bytes(1024, {{0, 1}, {160, 1}, {1008, 1}, {16, 2}, {320, 2}, {500, 2}, {600, 2}});
  EXPECT_EQ(ReadAll(*map), expected);
}

TEST(CbtMapTest, NumbersAroundTheWrapAt256) {
  auto map = MakeMap(8 * kSpb);
  ASSERT_NE(map, nullptr);
  const GenerationId g0 = map->Info().generation_id;

  // Switch #k gives previous = k, active = k + 1 for k <= 254.
  for (int k = 1; k <= 253; ++k) map->Switch();
  CbtMapState state = map->ExportState();
  EXPECT_EQ(state.snap_number_previous, 253);
  EXPECT_EQ(state.snap_number_active, 254);
  EXPECT_EQ(state.generation_id, g0);

  ASSERT_TRUE(map->Set(0, 1).ok());  // block 0 = 254
  map->Switch();                     // #254
  state = map->ExportState();
  EXPECT_EQ(state.snap_number_previous, 254);
  EXPECT_EQ(state.snap_number_active, 255);
  EXPECT_EQ(state.generation_id, g0);
  EXPECT_EQ(ReadAll(*map), Bytes(8, {{0, 254}}));

  ASSERT_TRUE(map->Set(kSpb, 1).ok());  // block 1 = 255
  EXPECT_EQ(WriteMapOf(*map), Bytes(8, {{0, 254}, {1, 255}}));

  // #255: active would become 256, so it restarts at 1 with a new generation; the write map is
  // zeroed and the read map is NOT refreshed (still the copy made at #254, without block 1).
  map->Switch();
  state = map->ExportState();
  EXPECT_EQ(state.snap_number_previous, 255);
  EXPECT_EQ(state.snap_number_active, 1);
  EXPECT_EQ(map->Info().changes_number, 255);
  const GenerationId g1 = state.generation_id;
  EXPECT_NE(g1, g0);
  EXPECT_FALSE(g1.is_nil());
  EXPECT_TRUE(AllZero(state.write_map));
  EXPECT_EQ(state.read_map, Bytes(8, {{0, 254}}));
  EXPECT_EQ(ReadAll(*map), Bytes(8, {{0, 254}}));
  // The old generation is gone: a full backup is required.
  auto stale = map->ChangedExtents(g0, 254, 0, 0);
  EXPECT_TRUE(IsFullBackupRequired(stale.status())) << stale.status();

  ASSERT_TRUE(map->Set(2 * kSpb, 1).ok());  // block 2 = 1 in the new generation
  EXPECT_EQ(WriteMapOf(*map), Bytes(8, {{2, 1}}));

  // #256: an ordinary switch again.
  map->Switch();
  state = map->ExportState();
  EXPECT_EQ(state.snap_number_previous, 1);
  EXPECT_EQ(state.snap_number_active, 2);
  EXPECT_EQ(state.generation_id, g1);
  EXPECT_EQ(ReadAll(*map), Bytes(8, {{2, 1}}));
  EXPECT_EQ(state.read_map, state.write_map);

  // The wrap happens again 254 switches later, at 255.
  for (int k = 2; k <= 254; ++k) map->Switch();
  state = map->ExportState();
  EXPECT_EQ(state.snap_number_previous, 254);
  EXPECT_EQ(state.snap_number_active, 255);
  EXPECT_EQ(state.generation_id, g1);
  map->Switch();
  state = map->ExportState();
  EXPECT_EQ(state.snap_number_previous, 255);
  EXPECT_EQ(state.snap_number_active, 1);
  EXPECT_NE(state.generation_id, g1);
  EXPECT_NE(state.generation_id, g0);
}

// ---------------------------------------------------------------------------------------------
// SetBoth

TEST(CbtMapTest, SetBothBeforeAnySwitchMarksTheReadMapWithZero) {
  auto map = MakeMap(8 * kSpb);
  ASSERT_NE(map, nullptr);
  ASSERT_TRUE(map->SetBoth(3 * kSpb, 1).ok());
  EXPECT_TRUE(AllZero(ReadAll(*map)));  // previous is 0
  EXPECT_EQ(WriteMapOf(*map), Bytes(8, {{3, 1}}));
  map->Switch();
  EXPECT_EQ(ReadAll(*map), Bytes(8, {{3, 1}}));
}

TEST(CbtMapTest, SetBothMarksReadMapWithPreviousAndWriteMapWithActive) {
  auto map = MakeMap(8 * kSpb);
  ASSERT_NE(map, nullptr);
  for (int i = 0; i < 4; ++i) map->Switch();  // previous 4, active 5
  ASSERT_TRUE(map->Set(0, 1).ok());
  ASSERT_TRUE(map->SetBoth(kSpb - 1, 2).ok());  // blocks 0 and 1
  EXPECT_EQ(ReadAll(*map), Bytes(8, {{0, 4}, {1, 4}}));
  EXPECT_EQ(WriteMapOf(*map), Bytes(8, {{0, 5}, {1, 5}}));
  // Visible to changed extents at once, for a base older than the current number.
  auto page = map->ChangedExtents(map->Info().generation_id, 3, 0, 0);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->extents.size(), 1u);
  EXPECT_EQ(page->extents[0], (ByteExtent{0, 2 * 65536}));
  map->Switch();
  EXPECT_EQ(ReadAll(*map), Bytes(8, {{0, 5}, {1, 5}}));
}

TEST(CbtMapTest, SetBothOutOfRangeDoesNotCorrupt) {
  auto map = MakeMap(1000);  // 8 blocks
  ASSERT_NE(map, nullptr);
  map->Switch();  // previous 1, active 2
  const absl::Status status = map->SetBoth(6 * kSpb, 3 * kSpb);  // blocks 6..8
  EXPECT_EQ(status.code(), StatusCode::kOutOfRange) << status;
  EXPECT_FALSE(map->corrupted());
  EXPECT_FALSE(map->Info().corrupted);
  // Like the kernel: the write map got the in-range part, the read map nothing.
  EXPECT_EQ(WriteMapOf(*map), Bytes(8, {{6, 2}, {7, 2}}));
  EXPECT_TRUE(AllZero(ReadAll(*map)));
  // The map keeps working.
  EXPECT_TRUE(map->Set(0, 1).ok());
  EXPECT_TRUE(map->SetBoth(kSpb, 1).ok());
  EXPECT_EQ(ReadAll(*map), Bytes(8, {{1, 1}}));
  EXPECT_TRUE(map->ChangedExtents(map->Info().generation_id, 0, 0, 0).ok());
}

// ---------------------------------------------------------------------------------------------
// Reset

TEST(CbtMapTest, ResetStartsOver) {
  auto map = MakeMap(1000);
  ASSERT_NE(map, nullptr);
  ASSERT_TRUE(map->Set(0, 1000).ok());
  map->Switch();
  map->Switch();
  ASSERT_TRUE(map->SetBoth(0, 1).ok());
  const GenerationId before = map->Info().generation_id;

  // Grow to 1 TiB + 1 sector: 1 MiB blocks, 2^20 + 1 of them.
  ASSERT_TRUE(map->Reset((uint64_t{1} << 31) + 1).ok());
  const CbtInfo info = map->Info();
  EXPECT_EQ(info.capacity_bytes, (uint64_t{1} << 40) + 512);
  EXPECT_EQ(info.block_size, 1u << 20);
  EXPECT_EQ(info.block_count, 1'048'577u);
  EXPECT_EQ(info.changes_number, 0);
  EXPECT_FALSE(info.corrupted);
  EXPECT_NE(info.generation_id, before);
  EXPECT_FALSE(info.generation_id.is_nil());
  const CbtMapState state = map->ExportState();
  EXPECT_EQ(state.snap_number_previous, 0);
  EXPECT_EQ(state.snap_number_active, 1);
  EXPECT_TRUE(AllZero(state.read_map));
  EXPECT_TRUE(AllZero(state.write_map));
  EXPECT_EQ(map->geometry().block_shift, 20u);
  // The new geometry is in force: sector 2^31 is in the last block.
  EXPECT_TRUE(map->Set(uint64_t{1} << 31, 1).ok());
  EXPECT_EQ(map->Set((uint64_t{1} << 31) + 2048, 1).code(), StatusCode::kOutOfRange);

  // Shrinking back, and resetting to the same capacity, both draw new generations.
  std::set<std::string> generations = {before.ToString(), info.generation_id.ToString()};
  for (uint64_t capacity : {1000, 1000, 0, 1}) {
    ASSERT_TRUE(map->Reset(capacity).ok());
    EXPECT_TRUE(generations.insert(map->Info().generation_id.ToString()).second);
    EXPECT_EQ(map->Info().capacity_bytes, capacity * 512);
    EXPECT_FALSE(map->corrupted());
  }
}

TEST(CbtMapTest, FailedResetLeavesTheMapAlone) {
  auto map = MakeMap(1000);
  ASSERT_NE(map, nullptr);
  ASSERT_TRUE(map->Set(0, 1).ok());
  map->Switch();
  const CbtMapState before = map->ExportState();
  EXPECT_EQ(map->Reset(UINT64_MAX).code(), StatusCode::kInvalidArgument);
  const CbtMapState after = map->ExportState();
  EXPECT_EQ(after.generation_id, before.generation_id);
  EXPECT_EQ(after.read_map, before.read_map);
  EXPECT_EQ(after.write_map, before.write_map);
  EXPECT_EQ(after.snap_number_previous, 1);

  auto tiny = MakeMap(100, {.minimum_shift = 9, .maximum_count = 1, .maximum_shift = 9});
  ASSERT_NE(tiny, nullptr);
  EXPECT_EQ(tiny->Reset((uint64_t{1} << 32) + 1).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(tiny->Info().block_count, 100u);
}

TEST(CbtMapTest, ResetKeepsTheParameters) {
  TrackingParams params{.minimum_shift = 12, .maximum_count = 10, .maximum_shift = 14};
  auto map = MakeMap(80, params);  // 4 KiB blocks: 10
  ASSERT_NE(map, nullptr);
  EXPECT_EQ(map->Info().block_size, 4096u);
  EXPECT_EQ(map->Info().block_count, 10u);
  ASSERT_TRUE(map->Reset(1000).ok());  // 125 at 4K, 63 at 8K, 32 at 16K (capped)
  EXPECT_EQ(map->Info().block_size, 16384u);
  EXPECT_EQ(map->Info().block_count, 32u);
}

// ---------------------------------------------------------------------------------------------
// ReadMap bounds

TEST(CbtMapTest, ReadMapBounds) {
  auto map = MakeMap(16 * kSpb);
  ASSERT_NE(map, nullptr);
  for (uint64_t b = 0; b < 16; ++b) ASSERT_TRUE(map->Set(b * kSpb, (b % 3) + 1).ok());
  ASSERT_TRUE(map->Set(5 * kSpb, 1).ok());
  map->Switch();
  map->Switch();
  ASSERT_TRUE(map->Set(7 * kSpb, 1).ok());
  map->Switch();
  const std::vector<uint8_t> all = ReadAll(*map);
  ASSERT_EQ(all.size(), 16u);

  std::vector<uint8_t> out(32, 0xEE);
  EXPECT_TRUE(map->ReadMap(10, 6, out.data()).ok());
  EXPECT_EQ(std::vector<uint8_t>(out.begin(), out.begin() + 6),
            std::vector<uint8_t>(all.begin() + 10, all.end()));
  EXPECT_EQ(out[6], 0xEE) << "wrote past the requested length";
  EXPECT_EQ(all[7], 3);

  EXPECT_TRUE(map->ReadMap(16, 0, out.data()).ok()) << "empty read at the end";
  EXPECT_TRUE(map->ReadMap(0, 0, out.data()).ok());
  EXPECT_EQ(map->ReadMap(17, 0, out.data()).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(map->ReadMap(0, 17, out.data()).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(map->ReadMap(10, 7, out.data()).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(map->ReadMap(16, 1, out.data()).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(map->ReadMap(UINT64_MAX, 1, out.data()).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(map->ReadMap(1, UINT64_MAX, out.data()).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(map->ReadMap(UINT64_MAX, UINT64_MAX, out.data()).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(out[6], 0xEE);
  // Every in-range window matches the whole map.
  for (uint64_t offset = 0; offset <= 16; ++offset) {
    for (uint64_t length = 0; offset + length <= 16; ++length) {
      std::vector<uint8_t> window(length + 1, 0xEE);
      ASSERT_TRUE(map->ReadMap(offset, length, window.data()).ok());
      for (uint64_t i = 0; i < length; ++i) ASSERT_EQ(window[i], all[offset + i]);
      ASSERT_EQ(window[length], 0xEE);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ExportState / FromState

void ExpectSameState(const CbtMapState& a, const CbtMapState& b) {
  EXPECT_EQ(a.geometry.capacity_sectors, b.geometry.capacity_sectors);
  EXPECT_EQ(a.geometry.block_shift, b.geometry.block_shift);
  EXPECT_EQ(a.geometry.block_count, b.geometry.block_count);
  EXPECT_EQ(a.snap_number_previous, b.snap_number_previous);
  EXPECT_EQ(a.snap_number_active, b.snap_number_active);
  EXPECT_EQ(a.generation_id, b.generation_id);
  EXPECT_EQ(a.corrupted, b.corrupted);
  EXPECT_EQ(a.read_map, b.read_map);
  EXPECT_EQ(a.write_map, b.write_map);
}

TEST(CbtMapTest, ExportFromStateRoundTrip) {
  auto map = MakeMap(100 * kSpb + 17);
  ASSERT_NE(map, nullptr);
  for (int round = 0; round < 5; ++round) {
    for (uint64_t s = round; s < 100 * kSpb; s += 777 + round) ASSERT_TRUE(map->Set(s, 3).ok());
    map->Switch();
  }
  ASSERT_TRUE(map->Set(42 * kSpb, 1).ok());
  ASSERT_TRUE(map->SetBoth(43 * kSpb, 1).ok());
  const CbtMapState state = map->ExportState();
  EXPECT_EQ(state.snap_number_previous, 5);

  auto restored = CbtMap::FromState(state);
  ASSERT_TRUE(restored.ok()) << restored.status();
  CbtMap& copy = **restored;
  ExpectSameState(copy.ExportState(), state);
  const CbtInfo a = map->Info();
  const CbtInfo b = copy.Info();
  EXPECT_EQ(a.capacity_bytes, b.capacity_bytes);
  EXPECT_EQ(a.block_size, b.block_size);
  EXPECT_EQ(a.block_count, b.block_count);
  EXPECT_EQ(a.generation_id, b.generation_id);
  EXPECT_EQ(a.changes_number, b.changes_number);
  EXPECT_EQ(ReadAll(*map), ReadAll(copy));

  // Both evolve identically afterwards.
  for (CbtMap* m : {map.get(), &copy}) {
    ASSERT_TRUE(m->Set(99 * kSpb, 200).ok());
    m->Switch();
    ASSERT_TRUE(m->SetBoth(1, 1).ok());
  }
  ExpectSameState(copy.ExportState(), map->ExportState());
  auto pa = map->ChangedExtents(a.generation_id, 3, 0, 0);
  auto pb = copy.ChangedExtents(a.generation_id, 3, 0, 0);
  ASSERT_TRUE(pa.ok() && pb.ok());
  EXPECT_EQ(pa->extents, pb->extents);
  EXPECT_FALSE(pa->extents.empty());
}

TEST(CbtMapTest, ExportFromStateKeepsCorruptionAndWrapState) {
  auto map = MakeMap(1000);
  ASSERT_NE(map, nullptr);
  for (int i = 0; i < 255; ++i) map->Switch();  // previous 255, active 1
  CbtMapState state = map->ExportState();
  ASSERT_EQ(state.snap_number_previous, 255);
  ASSERT_EQ(state.snap_number_active, 1);
  auto restored = CbtMap::FromState(state);
  ASSERT_TRUE(restored.ok()) << restored.status();
  ExpectSameState((*restored)->ExportState(), state);

  EXPECT_EQ(map->Set(5000, 1).code(), StatusCode::kOutOfRange);
  state = map->ExportState();
  ASSERT_TRUE(state.corrupted);
  restored = CbtMap::FromState(state);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_TRUE((*restored)->corrupted());
  EXPECT_EQ((*restored)->Set(0, 1).code(), StatusCode::kDataLoss);
}

TEST(CbtMapTest, ZeroCapacityRoundTrip) {
  // Empty maps (an empty vector's data() may be null) restore like any other.
  auto map = MakeMap(0);
  ASSERT_NE(map, nullptr);
  map->Switch();
  const CbtMapState state = map->ExportState();
  EXPECT_TRUE(state.read_map.empty());
  EXPECT_TRUE(state.write_map.empty());
  auto restored = CbtMap::FromState(state);
  ASSERT_TRUE(restored.ok()) << restored.status();
  ExpectSameState((*restored)->ExportState(), state);
  EXPECT_EQ((*restored)->Info().changes_number, 1);
  EXPECT_EQ((*restored)->Set(0, 1).code(), StatusCode::kOutOfRange);
}

TEST(CbtMapTest, FromStateRejectsInconsistentStates) {
  auto map = MakeMap(1000);
  ASSERT_NE(map, nullptr);
  ASSERT_TRUE(map->Set(0, 1).ok());
  map->Switch();
  map->Switch();
  ASSERT_TRUE(map->Set(kSpb, 1).ok());  // write map: block 0 = 1, block 1 = 3
  const CbtMapState good = map->ExportState();
  ASSERT_TRUE(CbtMap::FromState(good).ok());

  auto expect_rejected = [](CbtMapState state, const TrackingParams& params, const char* why) {
    auto restored = CbtMap::FromState(std::move(state), params);
    EXPECT_EQ(restored.status().code(), StatusCode::kInvalidArgument) << why;
  };
  const TrackingParams defaults;
  CbtMapState s = good;
  s.geometry.block_count = 9;
  s.read_map.resize(9);
  s.write_map.resize(9);
  expect_rejected(s, defaults, "block count does not match the capacity");
  s = good;
  s.geometry.block_shift = 17;
  expect_rejected(s, defaults, "block shift does not match the capacity");
  s = good;
  s.geometry.capacity_sectors = 5000;
  expect_rejected(s, defaults, "capacity does not match the block count");
  s = good;
  s.geometry.capacity_sectors = UINT64_MAX;
  expect_rejected(s, defaults, "capacity overflows");
  s = good;
  s.read_map.pop_back();
  expect_rejected(s, defaults, "read map too short");
  s = good;
  s.write_map.push_back(0);
  expect_rejected(s, defaults, "write map too long");
  s = good;
  s.read_map.clear();
  s.write_map.clear();
  expect_rejected(s, defaults, "maps missing");
  for (auto [previous, active] : {std::pair<int, int>{2, 2},
                                  {2, 4},
                                  {3, 2},
                                  {0, 0},
                                  {255, 0},
                                  {255, 2},
                                  {254, 1},
                                  {0, 255}}) {
    s = good;
    s.snap_number_previous = static_cast<uint8_t>(previous);
    s.snap_number_active = static_cast<uint8_t>(active);
    expect_rejected(s, defaults, "numbers out of step");
  }
  // A byte newer than the number that could have written it.
  s = good;
  s.write_map[3] = 4;  // active is 3
  expect_rejected(s, defaults, "write-map byte above the active number");
  s = good;
  s.read_map[3] = 3;  // previous is 2
  expect_rejected(s, defaults, "read-map byte above the previous number");
  // Parameters that give this capacity another geometry.
  expect_rejected(good, {.minimum_shift = 12, .maximum_count = 2'097'152, .maximum_shift = 26},
                  "other tracking parameters");
  expect_rejected(good, {.minimum_shift = 8}, "bad tracking parameters");

  // Consistent variations are accepted.
  s = good;
  s.snap_number_previous = 255;
  s.snap_number_active = 1;
  s.write_map.assign(s.write_map.size(), 1);
  s.read_map.assign(s.read_map.size(), 254);
  EXPECT_TRUE(CbtMap::FromState(s).ok());
  s = good;
  s.snap_number_previous = 254;
  s.snap_number_active = 255;
  s.write_map.assign(s.write_map.size(), 255);
  s.read_map.assign(s.read_map.size(), 254);
  EXPECT_TRUE(CbtMap::FromState(s).ok());
}

TEST(CbtMapTest, FullBackupRequiredPayload) {
  auto map = MakeMap(1000);
  ASSERT_NE(map, nullptr);
  map->Switch();
  GenerationId other = map->Info().generation_id;
  other.bytes[15] ^= 1;
  auto page = map->ChangedExtents(other, 0, 0, 0);
  EXPECT_EQ(page.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsFullBackupRequired(page.status()));
  // The payload carries the device's current generation.
  auto payload = page.status().GetPayload(kFullBackupRequiredPayload);
  ASSERT_TRUE(payload.has_value());
  EXPECT_EQ(std::string(*payload), map->Info().generation_id.ToString());
  EXPECT_FALSE(IsFullBackupRequired(absl::FailedPreconditionError("something else")));
  EXPECT_FALSE(IsFullBackupRequired(absl::OkStatus()));
  absl::Status wrong_code = absl::InvalidArgumentError("x");
  wrong_code.SetPayload(kFullBackupRequiredPayload, absl::Cord("y"));
  EXPECT_FALSE(IsFullBackupRequired(wrong_code));
}

}  // namespace
}  // namespace cbt
