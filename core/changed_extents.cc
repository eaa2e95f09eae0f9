#include "core/changed_extents.h"

#include <algorithm>
#include <bit>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace cbt {
namespace {

#if defined(__SSE2__)
// Bit i set when byte i of the 16 at `p` is greater than `since`.
inline uint32_t AboveMask16(const uint8_t* p, __m128i since) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i not_above = _mm_cmpeq_epi8(_mm_subs_epu8(v, since), _mm_setzero_si128());
  return ~static_cast<uint32_t>(_mm_movemask_epi8(not_above)) & 0xFFFFu;
}

// Finds the first byte whose "above" bit equals `want_above`, 64 bytes per step.
size_t FindFirst(std::span<const uint8_t> map, size_t from, uint8_t since, bool want_above) {
  const uint8_t* data = map.data();
  const size_t n = map.size();
  const __m128i k = _mm_set1_epi8(static_cast<char>(since));
  size_t i = from;
  auto select = [want_above](uint32_t above) { return want_above ? above : ~above & 0xFFFFu; };
  while (i + 64 <= n) {
    const uint64_t m = uint64_t{select(AboveMask16(data + i, k))} |
                       uint64_t{select(AboveMask16(data + i + 16, k))} << 16 |
                       uint64_t{select(AboveMask16(data + i + 32, k))} << 32 |
                       uint64_t{select(AboveMask16(data + i + 48, k))} << 48;
    if (m != 0) return i + static_cast<size_t>(std::countr_zero(m));
    i += 64;
  }
  for (; i < n; ++i) {
    if ((data[i] > since) == want_above) return i;
  }
  return n;
}
#else
size_t FindFirst(std::span<const uint8_t> map, size_t from, uint8_t since, bool want_above) {
  size_t i = from;
  while (i < map.size() && (map[i] > since) != want_above) ++i;
  return i;
}
#endif

}  // namespace

size_t FindFirstAbove(std::span<const uint8_t> map, size_t from, uint8_t since) {
  return from >= map.size() ? map.size() : FindFirst(map, from, since, true);
}

size_t FindFirstNotAbove(std::span<const uint8_t> map, size_t from, uint8_t since) {
  return from >= map.size() ? map.size() : FindFirst(map, from, since, false);
}

ChangedExtentsPage FindChangedExtents(std::span<const uint8_t> map, const TrackingGeometry& geometry,
                                      uint8_t since, uint64_t start_offset, size_t max_extents) {
  ChangedExtentsPage page;
  const uint64_t capacity = geometry.capacity_bytes();
  const uint32_t shift = geometry.block_shift;
  const size_t blocks = std::min<size_t>(map.size(), geometry.block_count);
  map = map.first(blocks);
  page.next_offset = capacity;
  page.complete = true;
  if (start_offset >= capacity) return page;

  size_t block = FindFirstAbove(map, static_cast<size_t>(start_offset >> shift), since);
  while (block < blocks) {
    const uint64_t begin = std::max<uint64_t>(uint64_t{block} << shift, start_offset);
    if (begin >= capacity) break;
    if (max_extents != 0 && page.extents.size() == max_extents) {
      page.next_offset = begin;
      page.complete = false;
      return page;
    }
    const size_t end_block = FindFirstNotAbove(map, block + 1, since);
    // A block index below the count starts below the capacity, so only the last block clips.
    const uint64_t end = end_block >= blocks ? capacity : uint64_t{end_block} << shift;
    page.extents.push_back({begin, end - begin});
    block = FindFirstAbove(map, end_block, since);
  }
  return page;
}

}  // namespace cbt
