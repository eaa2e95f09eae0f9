// Block-size choice: a table computed by hand from blksnap's cbt_map_calculate_block_size().
//
// count(shift) = ceil(capacity_bytes / 2^shift); the shift starts at 16 and grows while
// count > 2,097,152 (2^21), but never past 26. So a device of exactly 2^(21+s) bytes gets
// 2^s-byte blocks and exactly 2^21 of them; one sector more needs the next shift.
#include "core/tracking_geometry.h"

#include <cstdint>
#include <ostream>
#include <string>

#include "gtest/gtest.h"

namespace cbt {
namespace {

constexpr uint64_t KiB = uint64_t{1} << 10;
constexpr uint64_t MiB = uint64_t{1} << 20;
constexpr uint64_t GiB = uint64_t{1} << 30;
constexpr uint64_t TiB = uint64_t{1} << 40;
constexpr uint64_t PiB = uint64_t{1} << 50;

struct GeometryCase {
  const char* name;
  uint64_t capacity_bytes;  // a multiple of 512
  uint64_t block_size;
  uint64_t block_count;
};

// Every expected value below was worked out by hand (see the comment on each row).
const GeometryCase kDefaultCases[] = {
    // 0 bytes: count(16) = 0, nothing to grow.
    {"empty", 0, 64 * KiB, 0},
    // One sector still needs one whole block.
    {"one_sector", 512, 64 * KiB, 1},
    {"three_sectors", 1536, 64 * KiB, 1},
    // 1 MiB / 64 KiB = 16.
    {"1MiB", 1 * MiB, 64 * KiB, 16},
    // The real module: a 64 MiB loop device -> block_size 65536, block_count 1024.
    {"64MiB", 64 * MiB, 64 * KiB, 1024},
    // 100 MiB + 1 sector: 1600 whole blocks and a partial one.
    {"100MiB_plus_sector", 100 * MiB + 512, 64 * KiB, 1601},
    // 1 GiB / 64 KiB = 16384.
    {"1GiB", 1 * GiB, 64 * KiB, 16384},
    // 10^10 bytes / 65536 = 152587.89 -> 152588.
    {"10GB", 10'000'000'000, 64 * KiB, 152'588},
    // 128 GiB / 64 KiB = 2^21 exactly: not above the target, stays at 64 KiB.
    {"128GiB", 128 * GiB, 64 * KiB, 2'097'152},
    // 128 GiB + 512: 2^21 + 1 blocks of 64 KiB is too many -> 128 KiB: 2^20 + 1.
    {"128GiB_plus_sector", 128 * GiB + 512, 128 * KiB, 1'048'577},
    // 256 GiB: 2^22 at 64 KiB -> 2^21 at 128 KiB.
    {"256GiB", 256 * GiB, 128 * KiB, 2'097'152},
    // 5*10^11 bytes: 7629395 (64K), 3814698 (128K), 1907348.63 -> 1907349 (256K).
    {"500GB", 500'000'000'000, 256 * KiB, 1'907'349},
    // 1 TiB - 512: 2^21 - 2^-10 blocks of 512 KiB, rounded up to 2^21 (the 256 KiB count is
    // 2^22 - something, too many).
    {"1TiB_minus_sector", 1 * TiB - 512, 512 * KiB, 2'097'152},
    // 1 TiB = 2^40: 2^24, 2^23, 2^22 too many; 2^21 at 512 KiB.
    {"1TiB", 1 * TiB, 512 * KiB, 2'097'152},
    // 1 TiB + 512: 2^21 + 1 at 512 KiB is too many -> 1 MiB blocks: 2^20 + 1.
    {"1TiB_plus_sector", 1 * TiB + 512, 1 * MiB, 1'048'577},
    // 64 TiB = 2^46 -> 2^25-byte (32 MiB) blocks, 2^21 of them.
    {"64TiB", 64 * TiB, 32 * MiB, 2'097'152},
    // 100 TiB: 3,276,800 blocks of 32 MiB is too many; 1,638,400 of 64 MiB.
    {"100TiB", 100 * TiB, 64 * MiB, 1'638'400},
    // 128 TiB = 2^47: 2^21 blocks of 64 MiB, the largest device that meets the target.
    {"128TiB", 128 * TiB, 64 * MiB, 2'097'152},
    // One sector more: the shift is capped at 26, so the count goes past the target.
    {"128TiB_plus_sector", 128 * TiB + 512, 64 * MiB, 2'097'153},
    // 1 PiB = 2^50: capped at 64 MiB blocks, 2^24 of them.
    {"1PiB", 1 * PiB, 64 * MiB, 16'777'216},
};

void PrintTo(const GeometryCase& c, std::ostream* os) {
  *os << c.name << " (" << c.capacity_bytes << " bytes -> " << c.block_size << " x "
      << c.block_count << ")";
}

class DefaultGeometryTest : public testing::TestWithParam<GeometryCase> {};

TEST_P(DefaultGeometryTest, MatchesHandComputedTable) {
  const GeometryCase& c = GetParam();
  ASSERT_EQ(c.capacity_bytes % 512, 0u);
  auto geometry = ChooseTrackingGeometry(c.capacity_bytes / 512);
  ASSERT_TRUE(geometry.ok()) << geometry.status();
  EXPECT_EQ(geometry->capacity_sectors, c.capacity_bytes / 512);
  EXPECT_EQ(geometry->capacity_bytes(), c.capacity_bytes);
  EXPECT_EQ(geometry->block_size(), c.block_size);
  EXPECT_EQ(uint64_t{1} << geometry->block_shift, c.block_size);
  EXPECT_EQ(geometry->block_count, c.block_count);
  EXPECT_EQ(uint64_t{1} << (geometry->sectors_per_block_shift() + 9), c.block_size);
  // Invariant: the blocks cover the device and the last one starts inside it.
  EXPECT_GE(geometry->block_count * geometry->block_size(), c.capacity_bytes);
  if (c.block_count > 0) {
    EXPECT_LT((geometry->block_count - 1) * geometry->block_size(), c.capacity_bytes);
  }
}

INSTANTIATE_TEST_SUITE_P(HandTable, DefaultGeometryTest, testing::ValuesIn(kDefaultCases),
                         [](const testing::TestParamInfo<GeometryCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(TrackingGeometryTest, CapacityNotAMultipleOfTheBlockSizeRoundsUp) {
  // 1000 sectors = 512,000 bytes = 7 blocks of 64 KiB (458,752) plus 53,248 bytes.
  auto geometry = ChooseTrackingGeometry(1000);
  ASSERT_TRUE(geometry.ok());
  EXPECT_EQ(geometry->block_shift, 16u);
  EXPECT_EQ(geometry->block_count, 8u);
  // 1 TiB + 1 sector: 2^21 + 1 blocks at 512 KiB; 2^20 + 1 at 1 MiB.
  geometry = ChooseTrackingGeometry((uint64_t{1} << 31) + 1);
  ASSERT_TRUE(geometry.ok());
  EXPECT_EQ(geometry->block_shift, 20u);
  EXPECT_EQ(geometry->block_count, 1'048'577u);
}

TEST(TrackingGeometryTest, LargestRepresentableCapacity) {
  // The byte size of (2^64 - 1) >> 9 sectors still fits 64 bits: 64 MiB blocks (2^17 sectors),
  // ceil((2^55 - 1) / 2^17) = 2^38 blocks.
  const uint64_t largest = UINT64_MAX >> 9;
  auto geometry = ChooseTrackingGeometry(largest);
  ASSERT_TRUE(geometry.ok()) << geometry.status();
  EXPECT_EQ(geometry->block_shift, 26u);
  EXPECT_EQ(geometry->block_count, uint64_t{1} << 38);
  // One sector more overflows the byte size.
  auto too_big = ChooseTrackingGeometry(largest + 1);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChooseTrackingGeometry(UINT64_MAX).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TrackingGeometryTest, CustomParameters) {
  // Sector-sized blocks, at most 4 of them, at most 4 KiB: 100 sectors -> 100 (9), 50 (10),
  // 25 (11), 13 (12) and the shift is capped, so 13 blocks of 4 KiB.
  TrackingParams params{.minimum_shift = 9, .maximum_count = 4, .maximum_shift = 12};
  auto geometry = ChooseTrackingGeometry(100, params);
  ASSERT_TRUE(geometry.ok()) << geometry.status();
  EXPECT_EQ(geometry->block_shift, 12u);
  EXPECT_EQ(geometry->block_count, 13u);
  // 4 sectors fit at the minimum.
  geometry = ChooseTrackingGeometry(4, params);
  ASSERT_TRUE(geometry.ok());
  EXPECT_EQ(geometry->block_shift, 9u);
  EXPECT_EQ(geometry->block_count, 4u);
  // 5 sectors: 5 > 4 at 512 B, 3 at 1 KiB.
  geometry = ChooseTrackingGeometry(5, params);
  ASSERT_TRUE(geometry.ok());
  EXPECT_EQ(geometry->block_shift, 10u);
  EXPECT_EQ(geometry->block_count, 3u);
  // minimum == maximum: never grows.
  TrackingParams fixed{.minimum_shift = 12, .maximum_count = 1, .maximum_shift = 12};
  geometry = ChooseTrackingGeometry(81, fixed);
  ASSERT_TRUE(geometry.ok());
  EXPECT_EQ(geometry->block_shift, 12u);
  EXPECT_EQ(geometry->block_count, 11u);  // 81 / 8 = 10.1
  // The largest allowed maximum_shift.
  TrackingParams wide{.minimum_shift = 9, .maximum_count = 1, .maximum_shift = 62};
  geometry = ChooseTrackingGeometry(UINT64_MAX >> 9, wide);
  ASSERT_TRUE(geometry.ok()) << geometry.status();
  EXPECT_EQ(geometry->block_shift, 62u);
  EXPECT_EQ(geometry->block_count, 4u);  // 2^64 - 512 bytes in 2^62-byte blocks
}

TEST(TrackingGeometryTest, BadParametersAreRejected) {
  const TrackingParams bad[] = {
      {.minimum_shift = 8, .maximum_count = 2'097'152, .maximum_shift = 26},   // below a sector
      {.minimum_shift = 0, .maximum_count = 2'097'152, .maximum_shift = 26},
      {.minimum_shift = 16, .maximum_count = 2'097'152, .maximum_shift = 15},  // max < min
      {.minimum_shift = 16, .maximum_count = 0, .maximum_shift = 26},          // zero count
      {.minimum_shift = 16, .maximum_count = 2'097'152, .maximum_shift = 63},  // shift too big
      {.minimum_shift = 64, .maximum_count = 2'097'152, .maximum_shift = 64},
  };
  for (const TrackingParams& params : bad) {
    auto geometry = ChooseTrackingGeometry(2048, params);
    EXPECT_EQ(geometry.status().code(), absl::StatusCode::kInvalidArgument)
        << params.minimum_shift << "/" << params.maximum_count << "/" << params.maximum_shift;
  }
  // The boundary values themselves are fine.
  EXPECT_TRUE(ChooseTrackingGeometry(
                  2048, {.minimum_shift = 9, .maximum_count = 1, .maximum_shift = 9})
                  .ok());
}

}  // namespace
}  // namespace cbt
