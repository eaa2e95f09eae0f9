// Changed extents: CbtMap::ChangedExtents validation, FindChangedExtents coalescing, clipping and
// paging, and the SIMD byte scanners against a plain loop.
#include "core/changed_extents.h"

#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/cbt_map.h"
#include "gtest/gtest.h"

namespace cbt {

// gtest prints parameters with this (found by argument-dependent lookup, so not in the unnamed
// namespace).
void PrintTo(ScanIsa isa, std::ostream* os) { *os << ScanIsaName(isa); }

namespace {

using absl::StatusCode;

constexpr uint64_t kBlock = 65536;  // default block size for small devices
constexpr uint64_t kSpb = 128;      // sectors per 64 KiB block

TrackingGeometry Geometry64K(uint64_t capacity_sectors) {
  auto geometry = ChooseTrackingGeometry(capacity_sectors);
  EXPECT_TRUE(geometry.ok());
  EXPECT_EQ(geometry->block_shift, 16u);
  return *geometry;
}

// Every scanner implementation this CPU can run; the tests below repeat for each one (they all
// must give identical results).
std::vector<ScanIsa> AvailableIsas() {
  const ScanIsa best = ActiveScanIsa();
  std::vector<ScanIsa> isas;
  for (ScanIsa isa : {ScanIsa::kScalar, ScanIsa::kSse2, ScanIsa::kAvx2}) {
    if (SetScanIsaForTesting(isa)) isas.push_back(isa);
  }
  SetScanIsaForTesting(best);
  return isas;
}

class ScanIsaTest : public testing::TestWithParam<ScanIsa> {
 protected:
  void SetUp() override {
    best_ = ActiveScanIsa();
    if (!SetScanIsaForTesting(GetParam())) {
      GTEST_SKIP() << ScanIsaName(GetParam()) << " is not available on this CPU";
    }
    ASSERT_EQ(ActiveScanIsa(), GetParam());
  }
  void TearDown() override { SetScanIsaForTesting(best_); }
  ScanIsa best_ = ScanIsa::kScalar;
};

std::string IsaName(const testing::TestParamInfo<ScanIsa>& info) {
  return ScanIsaName(info.param);
}

TEST(ScanIsaSelectionTest, BestIsPickedAndUnknownIsRefused) {
  const ScanIsa best = ActiveScanIsa();
  const std::vector<ScanIsa> isas = AvailableIsas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.back(), best) << "the best available implementation is the default";
  EXPECT_EQ(ActiveScanIsa(), best);
#if defined(__x86_64__)
  EXPECT_GE(isas.size(), 2u) << "scalar and SSE2 always exist on x86-64";
#endif
  EXPECT_FALSE(SetScanIsaForTesting(static_cast<ScanIsa>(99)));
  EXPECT_EQ(ActiveScanIsa(), best);
  EXPECT_STREQ(ScanIsaName(ScanIsa::kAvx2), "avx2");
}

// ---------------------------------------------------------------------------------------------
// CbtMap::ChangedExtents validation

TEST(ChangedExtentsTest, GenerationMismatchRequiresAFullBackup) {
  auto created = CbtMap::Create(16 * kSpb);
  ASSERT_TRUE(created.ok());
  CbtMap& map = **created;
  ASSERT_TRUE(map.Set(0, 1).ok());
  map.Switch();
  const GenerationId current = map.Info().generation_id;
  ASSERT_TRUE(map.ChangedExtents(current, 0, 0, 0).ok());

  for (int byte = 0; byte < 16; ++byte) {
    GenerationId other = current;
    other.bytes[byte] ^= 0x80;
    auto page = map.ChangedExtents(other, 0, 0, 0);
    EXPECT_EQ(page.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_TRUE(IsFullBackupRequired(page.status())) << page.status();
  }
  // The generation check comes before the number check.
  auto page = map.ChangedExtents(Uuid{}, 200, 0, 0);
  EXPECT_TRUE(IsFullBackupRequired(page.status())) << page.status();
  // After a reset the old generation is refused too.
  ASSERT_TRUE(map.Reset(16 * kSpb).ok());
  page = map.ChangedExtents(current, 0, 0, 0);
  EXPECT_TRUE(IsFullBackupRequired(page.status())) << page.status();
}

TEST(ChangedExtentsTest, BaseNewerThanCurrentIsInvalid) {
  auto created = CbtMap::Create(16 * kSpb);
  ASSERT_TRUE(created.ok());
  CbtMap& map = **created;
  const GenerationId generation = map.Info().generation_id;
  // Fresh map: changes number 0; base 0 is fine, 1 is newer.
  auto page = map.ChangedExtents(generation, 0, 0, 0);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->extents.empty());
  EXPECT_EQ(map.ChangedExtents(generation, 1, 0, 0).status().code(),
            StatusCode::kInvalidArgument);
  for (int i = 0; i < 3; ++i) map.Switch();  // changes number 3
  EXPECT_TRUE(map.ChangedExtents(generation, 3, 0, 0).ok());
  EXPECT_EQ(map.ChangedExtents(generation, 4, 0, 0).status().code(),
            StatusCode::kInvalidArgument);
  // 255 below the current number is the wrap point that began a generation, not "newer".
  EXPECT_TRUE(map.ChangedExtents(generation, 255, 0, 0).ok());
  EXPECT_FALSE(IsFullBackupRequired(map.ChangedExtents(generation, 4, 0, 0).status()));
}

TEST(ChangedExtentsTest, OnlyBlocksAboveTheBaseNumberCount) {
  auto created = CbtMap::Create(16 * kSpb);
  ASSERT_TRUE(created.ok());
  CbtMap& map = **created;
  const GenerationId generation = map.Info().generation_id;
  ASSERT_TRUE(map.Set(1 * kSpb, 1).ok());
  map.Switch();  // block 1 = 1
  ASSERT_TRUE(map.Set(3 * kSpb, 1).ok());
  map.Switch();  // block 3 = 2
  ASSERT_TRUE(map.Set(5 * kSpb, 1).ok());
  map.Switch();  // block 5 = 3
  ASSERT_TRUE(map.Set(7 * kSpb, 1).ok());  // not in the read map yet

  auto extents_since = [&](uint8_t base) {
    auto page = map.ChangedExtents(generation, base, 0, 0);
    EXPECT_TRUE(page.ok()) << page.status();
    EXPECT_TRUE(page->complete);
    EXPECT_EQ(page->next_offset, 16 * kBlock);
    return page->extents;
  };
  EXPECT_EQ(extents_since(0), (std::vector<ByteExtent>{
                                  {1 * kBlock, kBlock}, {3 * kBlock, kBlock}, {5 * kBlock, kBlock}}));
  EXPECT_EQ(extents_since(1),
            (std::vector<ByteExtent>{{3 * kBlock, kBlock}, {5 * kBlock, kBlock}}));
  EXPECT_EQ(extents_since(2), (std::vector<ByteExtent>{{5 * kBlock, kBlock}}));
  EXPECT_EQ(extents_since(3), std::vector<ByteExtent>{});
}

TEST(ChangedExtentsTest, ValidateChangesBase) {
  CbtInfo current;
  current.generation_id = NewRandomUuid();
  current.changes_number = 7;
  EXPECT_TRUE(ValidateChangesBase(current, current.generation_id, 0).ok());
  EXPECT_TRUE(ValidateChangesBase(current, current.generation_id, 7).ok());
  absl::Status status = ValidateChangesBase(current, current.generation_id, 8);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status;
  EXPECT_FALSE(IsFullBackupRequired(status));
  const GenerationId other = NewRandomUuid();
  status = ValidateChangesBase(current, other, 3);
  EXPECT_TRUE(IsFullBackupRequired(status)) << status;
  EXPECT_EQ(std::string(*status.GetPayload(kFullBackupRequiredPayload)),
            current.generation_id.ToString());
  status = ValidateChangesBase(current, other, 200);  // generation first
  EXPECT_TRUE(IsFullBackupRequired(status)) << status;
  current.corrupted = true;  // corruption first of all
  EXPECT_EQ(ValidateChangesBase(current, current.generation_id, 0).code(), StatusCode::kDataLoss);
  EXPECT_EQ(ValidateChangesBase(current, other, 200).code(), StatusCode::kDataLoss);
}

// ---------------------------------------------------------------------------------------------
// FindChangedExtents

TEST_P(ScanIsaTest, CoalescesAdjacentBlocks) {
  const TrackingGeometry geometry = Geometry64K(10 * kSpb);
  const std::vector<uint8_t> map = {0, 2, 3, 1, 2, 0, 0, 2, 9, 2};
  ChangedExtentsPage page = FindChangedExtents(map, geometry, 1, 0, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{
                              {1 * kBlock, 2 * kBlock}, {4 * kBlock, kBlock}, {7 * kBlock, 3 * kBlock}}));
  EXPECT_TRUE(page.complete);
  EXPECT_EQ(page.next_offset, 10 * kBlock);
  // A byte equal to the base is not a change; lower the base and block 3 joins 1-4 into one run.
  page = FindChangedExtents(map, geometry, 0, 0, 0);
  EXPECT_EQ(page.extents,
            (std::vector<ByteExtent>{{1 * kBlock, 4 * kBlock}, {7 * kBlock, 3 * kBlock}}));
  page = FindChangedExtents(map, geometry, 8, 0, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{{8 * kBlock, kBlock}}));
  page = FindChangedExtents(map, geometry, 9, 0, 0);
  EXPECT_TRUE(page.extents.empty());
  EXPECT_TRUE(page.complete);
  EXPECT_EQ(page.next_offset, 10 * kBlock);
  // Everything changed: one extent for the whole device.
  const std::vector<uint8_t> full(10, 255);
  page = FindChangedExtents(full, geometry, 254, 0, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{{0, 10 * kBlock}}));
}

TEST_P(ScanIsaTest, LastExtentIsClippedToTheCapacity) {
  // 1000 sectors = 512,000 bytes; block 7 covers 458,752..524,287 but only 53,248 bytes exist.
  const TrackingGeometry geometry = Geometry64K(1000);
  ASSERT_EQ(geometry.block_count, 8u);
  std::vector<uint8_t> map(8, 0);
  map[7] = 1;
  ChangedExtentsPage page = FindChangedExtents(map, geometry, 0, 0, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{{7 * kBlock, 512'000 - 7 * kBlock}}));
  EXPECT_EQ(page.next_offset, 512'000u);
  map[6] = 1;
  page = FindChangedExtents(map, geometry, 0, 0, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{{6 * kBlock, 512'000 - 6 * kBlock}}));
  // Starting inside the partial block.
  page = FindChangedExtents(map, geometry, 0, 500'000, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{{500'000, 12'000}}));
  // Starting at or past the capacity: empty and complete.
  for (uint64_t start : {uint64_t{512'000}, uint64_t{512'001}, uint64_t{524'288}, UINT64_MAX}) {
    page = FindChangedExtents(map, geometry, 0, start, 0);
    EXPECT_TRUE(page.extents.empty()) << start;
    EXPECT_TRUE(page.complete);
    EXPECT_EQ(page.next_offset, 512'000u);
  }
  // One sector before the end.
  page = FindChangedExtents(map, geometry, 0, 511'488, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{{511'488, 512}}));
}

TEST_P(ScanIsaTest, StartOffsetClipsTheFirstExtent) {
  const TrackingGeometry geometry = Geometry64K(10 * kSpb);
  const std::vector<uint8_t> map = {0, 1, 1, 1, 0, 0, 1, 0, 0, 1};
  // In the middle of block 2 (inside the run 1-3).
  ChangedExtentsPage page = FindChangedExtents(map, geometry, 0, 2 * kBlock + 1000, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{
                              {2 * kBlock + 1000, 2 * kBlock - 1000}, {6 * kBlock, kBlock}, {9 * kBlock, kBlock}}));
  // In the middle of an unchanged block: the next extent starts at its block boundary.
  page = FindChangedExtents(map, geometry, 0, 4 * kBlock + 77, 0);
  EXPECT_EQ(page.extents,
            (std::vector<ByteExtent>{{6 * kBlock, kBlock}, {9 * kBlock, kBlock}}));
  // On the last byte of a changed block.
  page = FindChangedExtents(map, geometry, 0, 7 * kBlock - 1, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{{7 * kBlock - 1, 1}, {9 * kBlock, kBlock}}));
  // On a block boundary.
  page = FindChangedExtents(map, geometry, 0, 3 * kBlock, 0);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{
                              {3 * kBlock, kBlock}, {6 * kBlock, kBlock}, {9 * kBlock, kBlock}}));
}

TEST_P(ScanIsaTest, PagingSemantics) {
  const TrackingGeometry geometry = Geometry64K(10 * kSpb);
  const std::vector<uint8_t> map = {1, 0, 1, 1, 0, 1, 0, 0, 0, 1};
  // All four: {0}, {2,3}, {5}, {9}.
  ChangedExtentsPage page = FindChangedExtents(map, geometry, 0, 0, 2);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{{0, kBlock}, {2 * kBlock, 2 * kBlock}}));
  EXPECT_FALSE(page.complete);
  EXPECT_EQ(page.next_offset, 5 * kBlock) << "the first changed byte after the last extent";
  page = FindChangedExtents(map, geometry, 0, page.next_offset, 2);
  EXPECT_EQ(page.extents, (std::vector<ByteExtent>{{5 * kBlock, kBlock}, {9 * kBlock, kBlock}}));
  EXPECT_TRUE(page.complete) << "a full page with nothing beyond is complete";
  EXPECT_EQ(page.next_offset, 10 * kBlock);
  // max 4: exactly all of them, complete.
  page = FindChangedExtents(map, geometry, 0, 0, 4);
  EXPECT_EQ(page.extents.size(), 4u);
  EXPECT_TRUE(page.complete);
  EXPECT_EQ(page.next_offset, 10 * kBlock);
  // max 3: the last one is left.
  page = FindChangedExtents(map, geometry, 0, 0, 3);
  EXPECT_EQ(page.extents.size(), 3u);
  EXPECT_FALSE(page.complete);
  EXPECT_EQ(page.next_offset, 9 * kBlock);
  // Nothing changed: an empty complete page whatever the limit.
  const std::vector<uint8_t> clean(10, 0);
  page = FindChangedExtents(clean, geometry, 0, 0, 1);
  EXPECT_TRUE(page.extents.empty());
  EXPECT_TRUE(page.complete);
  EXPECT_EQ(page.next_offset, 10 * kBlock);
}

// A straightforward reference: one bool per byte of the device.
std::vector<ByteExtent> NaiveExtents(const std::vector<uint8_t>& map, const TrackingGeometry& g,
                                     uint8_t since, uint64_t start) {
  std::vector<ByteExtent> out;
  const uint64_t capacity = g.capacity_bytes();
  for (uint64_t b = 0; b < map.size(); ++b) {
    if (map[b] <= since) continue;
    uint64_t lo = std::max(b * g.block_size(), start);
    uint64_t hi = std::min((b + 1) * g.block_size(), capacity);
    if (lo >= hi) continue;
    if (!out.empty() && out.back().offset + out.back().length == lo) {
      out.back().length += hi - lo;
    } else {
      out.push_back({lo, hi - lo});
    }
  }
  return out;
}

TEST_P(ScanIsaTest, PagesConcatenateToTheUnpagedResult) {
  std::mt19937_64 rng(12345);
  for (int iteration = 0; iteration < 200; ++iteration) {
    const uint64_t capacity_sectors = 1 + rng() % (300 * kSpb);
    const TrackingGeometry geometry = Geometry64K(capacity_sectors);
    std::vector<uint8_t> map(geometry.block_count);
    const int density = static_cast<int>(rng() % 100);
    for (auto& b : map) b = (static_cast<int>(rng() % 100) < density) ? 2 + rng() % 3 : rng() % 3;
    const uint8_t since = static_cast<uint8_t>(1 + rng() % 2);
    const uint64_t start =
        (rng() % 4 == 0) ? 0 : rng() % (geometry.capacity_bytes() + 2 * kBlock);
    const std::vector<ByteExtent> expected = NaiveExtents(map, geometry, since, start);

    const ChangedExtentsPage unpaged = FindChangedExtents(map, geometry, since, start, 0);
    ASSERT_EQ(unpaged.extents, expected) << "iteration " << iteration;
    ASSERT_TRUE(unpaged.complete);
    ASSERT_EQ(unpaged.next_offset, geometry.capacity_bytes());

    for (size_t max : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{64}}) {
      std::vector<ByteExtent> all;
      uint64_t offset = start;
      size_t pages = 0;
      while (true) {
        const ChangedExtentsPage page = FindChangedExtents(map, geometry, since, offset, max);
        ASSERT_LE(page.extents.size(), max);
        ++pages;
        ASSERT_LE(pages, expected.size() + 1) << "paging does not progress";
        if (!page.complete) {
          ASSERT_EQ(page.extents.size(), max) << "an incomplete page is a full page";
          ASSERT_GT(page.next_offset, page.extents.back().offset + page.extents.back().length)
              << "next_offset must be past the last extent and not adjacent";
          const size_t next_index = all.size() + page.extents.size();
          ASSERT_LT(next_index, expected.size());
          ASSERT_EQ(page.next_offset, expected[next_index].offset);
        } else {
          ASSERT_EQ(page.next_offset, geometry.capacity_bytes());
        }
        all.insert(all.end(), page.extents.begin(), page.extents.end());
        if (page.complete) break;
        offset = page.next_offset;
      }
      ASSERT_EQ(all, expected) << "iteration " << iteration << " max " << max;
    }
  }
}

TEST(FindChangedExtentsTest, ThroughTheMapWithAPartialLastBlockAndBigBlocks) {
  // 1 TiB + 1 sector: 1 MiB blocks, the last one holds 512 bytes.
  auto created = CbtMap::Create((uint64_t{1} << 31) + 1);
  ASSERT_TRUE(created.ok());
  CbtMap& map = **created;
  const uint64_t capacity = (uint64_t{1} << 40) + 512;
  ASSERT_TRUE(map.Set(0, 1).ok());
  ASSERT_TRUE(map.Set((uint64_t{1} << 31) - 1, 2).ok());  // last sector of block 2^20 - 1 and
                                                          // the only sector of block 2^20
  map.Switch();
  auto page = map.ChangedExtents(map.Info().generation_id, 0, 0, 0);
  ASSERT_TRUE(page.ok()) << page.status();
  const uint64_t mib = uint64_t{1} << 20;
  EXPECT_EQ(page->extents, (std::vector<ByteExtent>{{0, mib}, {(uint64_t{1} << 40) - mib, mib + 512}}));
  EXPECT_EQ(page->next_offset, capacity);
  page = map.ChangedExtents(map.Info().generation_id, 0, 0, 1);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->extents, (std::vector<ByteExtent>{{0, mib}}));
  EXPECT_FALSE(page->complete);
  EXPECT_EQ(page->next_offset, (uint64_t{1} << 40) - mib);
  page = map.ChangedExtents(map.Info().generation_id, 0, page->next_offset + 5, 1);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->extents,
            (std::vector<ByteExtent>{{(uint64_t{1} << 40) - mib + 5, mib + 512 - 5}}));
  EXPECT_TRUE(page->complete);
}

// ---------------------------------------------------------------------------------------------
// FindFirstAbove / FindFirstNotAbove

size_t NaiveFirst(const std::vector<uint8_t>& map, size_t from, uint8_t since, bool above) {
  for (size_t i = from; i < map.size(); ++i) {
    if ((map[i] > since) == above) return i;
  }
  return map.size();
}

// Lengths around the 16-byte vectors and the 64-byte steps, every start, every position of a
// single "hit" byte (and none), with bytes on both sides of the comparison, including ones with
// the top bit set (a signed compare would get those wrong).
TEST_P(ScanIsaTest, FindFirstAroundVectorBoundaries) {
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 20; ++n) lengths.push_back(n);
  for (size_t n : {31, 32, 33, 47, 48, 49, 63, 64, 65, 79, 80, 81, 127, 128, 129, 191, 192, 193,
                   255, 256, 257}) {
    lengths.push_back(n);
  }
  const uint8_t sinces[] = {0, 1, 100, 127, 128, 200, 254};
  for (size_t n : lengths) {
    for (uint8_t since : sinces) {
      const uint8_t low = static_cast<uint8_t>(since / 2);      // not above
      const uint8_t equal = since;                              // not above
      const uint8_t high = static_cast<uint8_t>(since + 1 + (255 - since) / 2);  // above
      for (size_t hit = 0; hit <= n; ++hit) {  // hit == n: no hit at all
        // Searching for "above" in a sea of not-above bytes.
        std::vector<uint8_t> map(n);
        for (size_t i = 0; i < n; ++i) map[i] = (i % 3 == 0) ? equal : low;
        if (hit < n) map[hit] = high;
        // And searching for "not above" in a sea of above bytes.
        std::vector<uint8_t> inverse(n);
        for (size_t i = 0; i < n; ++i) inverse[i] = (i % 2 == 0) ? high : 255;
        if (hit < n) inverse[hit] = (hit % 2 == 0) ? equal : low;
        for (size_t from : {size_t{0}, size_t{1}, hit > 0 ? hit - 1 : 0, hit, hit + 1, n, n + 5}) {
          ASSERT_EQ(FindFirstAbove(map, from, since), NaiveFirst(map, from, since, true))
              << "n=" << n << " since=" << int{since} << " hit=" << hit << " from=" << from;
          ASSERT_EQ(FindFirstNotAbove(inverse, from, since),
                    NaiveFirst(inverse, from, since, false))
              << "n=" << n << " since=" << int{since} << " hit=" << hit << " from=" << from;
        }
      }
    }
  }
}

TEST_P(ScanIsaTest, FindFirstEveryStartOnRandomMaps) {
  std::mt19937_64 rng(777);
  for (size_t n : {1, 15, 16, 17, 63, 64, 65, 100, 130, 200, 300, 1000}) {
    for (int density : {0, 1, 10, 50, 90, 99, 100}) {
      std::vector<uint8_t> map(n);
      const uint8_t since = static_cast<uint8_t>(rng() % 255);
      for (auto& b : map) {
        const bool above = static_cast<int>(rng() % 100) < density;
        b = above ? static_cast<uint8_t>(since + 1 + rng() % (255 - since))
                  : static_cast<uint8_t>(rng() % (since + 1));
      }
      for (size_t from = 0; from <= n + 1; ++from) {
        ASSERT_EQ(FindFirstAbove(map, from, since), NaiveFirst(map, from, since, true))
            << n << " " << density << " " << from;
        ASSERT_EQ(FindFirstNotAbove(map, from, since), NaiveFirst(map, from, since, false))
            << n << " " << density << " " << from;
      }
    }
  }
}

TEST_P(ScanIsaTest, FindFirstExtremes) {
  const std::vector<uint8_t> all_max(100, 255);
  EXPECT_EQ(FindFirstAbove(all_max, 0, 255), 100u) << "nothing is above 255";
  EXPECT_EQ(FindFirstNotAbove(all_max, 0, 255), 0u);
  EXPECT_EQ(FindFirstNotAbove(all_max, 37, 254), 100u);
  EXPECT_EQ(FindFirstAbove(all_max, 37, 254), 37u);
  const std::vector<uint8_t> zeros(100, 0);
  EXPECT_EQ(FindFirstAbove(zeros, 0, 0), 100u);
  EXPECT_EQ(FindFirstNotAbove(zeros, 99, 0), 99u);
  const std::vector<uint8_t> empty;
  EXPECT_EQ(FindFirstAbove(empty, 0, 0), 0u);
  EXPECT_EQ(FindFirstNotAbove(empty, 3, 0), 0u);
  // A subspan: the answer is relative to it and never looks past its end.
  std::vector<uint8_t> big(200, 0);
  big[150] = 9;
  EXPECT_EQ(FindFirstAbove(std::span<const uint8_t>(big).first(150), 0, 0), 150u);
  EXPECT_EQ(FindFirstAbove(std::span<const uint8_t>(big).subspan(100), 0, 0), 50u);
}


// Long maps with long quiet and long busy stretches, so that the 256-byte skips, runs that cross
// 64-block chunks and the scalar tail are all exercised, compared with the naive scan.
TEST_P(ScanIsaTest, LongMapsWithRunsAndGaps) {
  std::mt19937_64 rng(4242);
  for (int iteration = 0; iteration < 60; ++iteration) {
    const uint64_t blocks = 1 + rng() % 5000;
    const TrackingGeometry geometry = Geometry64K(blocks * kSpb - rng() % kSpb);
    ASSERT_EQ(geometry.block_count, blocks);
    std::vector<uint8_t> map(blocks);
    const uint8_t since = static_cast<uint8_t>(rng() % 255);
    size_t i = 0;
    while (i < blocks) {
      const bool above = rng() % 2 == 0;
      size_t length = 0;
      switch (rng() % 4) {
        case 0: length = 1 + rng() % 3; break;
        case 1: length = 1 + rng() % 70; break;
        case 2: length = 200 + rng() % 700; break;
        default: length = 60 + rng() % 10; break;
      }
      for (size_t j = i; j < std::min<size_t>(blocks, i + length); ++j) {
        map[j] = above ? static_cast<uint8_t>(since + 1 + rng() % (255 - since))
                       : static_cast<uint8_t>(rng() % (since + 1));
      }
      i += length;
    }
    for (uint64_t start : {uint64_t{0}, rng() % geometry.capacity_bytes(),
                           (rng() % blocks) * kBlock, geometry.capacity_bytes() - 1}) {
      const std::vector<ByteExtent> expected = NaiveExtents(map, geometry, since, start);
      const ChangedExtentsPage page = FindChangedExtents(map, geometry, since, start, 0);
      ASSERT_EQ(page.extents, expected) << "iteration " << iteration << " start " << start;
      ASSERT_TRUE(page.complete);
      for (size_t max : {size_t{1}, size_t{5}}) {
        const ChangedExtentsPage limited = FindChangedExtents(map, geometry, since, start, max);
        const size_t n = std::min(max, expected.size());
        ASSERT_EQ(limited.extents,
                  std::vector<ByteExtent>(expected.begin(), expected.begin() + n));
        ASSERT_EQ(limited.complete, expected.size() <= max);
        ASSERT_EQ(limited.next_offset, expected.size() <= max ? geometry.capacity_bytes()
                                                              : expected[max].offset);
      }
      for (size_t from : {size_t{0}, static_cast<size_t>(rng() % blocks)}) {
        ASSERT_EQ(FindFirstAbove(map, from, since), NaiveFirst(map, from, since, true));
        ASSERT_EQ(FindFirstNotAbove(map, from, since), NaiveFirst(map, from, since, false));
      }
    }
  }
}

TEST_P(ScanIsaTest, SinceTwoHundredFiftyFive) {
  const TrackingGeometry geometry = Geometry64K(300 * kSpb);
  const std::vector<uint8_t> map(300, 255);
  const ChangedExtentsPage page = FindChangedExtents(map, geometry, 255, 0, 0);
  EXPECT_TRUE(page.extents.empty());
  EXPECT_TRUE(page.complete);
  EXPECT_EQ(page.next_offset, 300 * kBlock);
  EXPECT_EQ(FindChangedExtents(map, geometry, 254, 0, 0).extents,
            (std::vector<ByteExtent>{{0, 300 * kBlock}}));
}

INSTANTIATE_TEST_SUITE_P(AllIsas, ScanIsaTest,
                         testing::Values(ScanIsa::kScalar, ScanIsa::kSse2, ScanIsa::kAvx2),
                         IsaName);

}  // namespace
}  // namespace cbt

namespace cbt {
namespace {

// A backup taken at the take that wrapped records (new generation, 255); the next incremental
// must list exactly what was written after that take.
TEST(ChangedExtentsTest, BaseTakenAtTheWrapComparesAsTheStartOfTheGeneration) {
  auto map = CbtMap::Create(uint64_t{64} << 11);  // 64 MiB: 1024 blocks of 64 KiB
  ASSERT_TRUE(map.ok());
  for (int i = 0; i < 255; ++i) (*map)->Switch();
  const CbtInfo at_wrap = (*map)->Info();
  ASSERT_EQ(at_wrap.changes_number, 255);
  ASSERT_TRUE((*map)->Set(128 * 10, 1).ok());  // block 10
  (*map)->Switch();
  EXPECT_EQ(EffectiveChangesBase(255, 1), 0);
  EXPECT_EQ(EffectiveChangesBase(255, 255), 255);
  EXPECT_EQ(EffectiveChangesBase(7, 9), 7);
  auto page = (*map)->ChangedExtents(at_wrap.generation_id, 255, 0, 0);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->extents.size(), 1u);
  EXPECT_EQ(page->extents[0], (ByteExtent{10 * 65536, 65536}));
}

}  // namespace
}  // namespace cbt
