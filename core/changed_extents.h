// Turning a CBT read map into the byte extents an incremental backup must copy.
#ifndef CBT_CORE_CHANGED_EXTENTS_H_
#define CBT_CORE_CHANGED_EXTENTS_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/tracking_geometry.h"

namespace cbt {

struct ByteExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  friend bool operator==(const ByteExtent&, const ByteExtent&) = default;
};

struct ChangedExtentsPage {
  std::vector<ByteExtent> extents;  // ascending, disjoint, never adjacent
  // Where the next page starts: the first changed byte after the last extent, or the capacity
  // when nothing changed lies beyond (then `complete` is true).
  uint64_t next_offset = 0;
  bool complete = false;
};

// Scans `map` (one change number per block, `geometry.block_count` bytes) for blocks whose number
// is greater than `since`, from byte `start_offset` on, and coalesces them into byte extents:
// the first is clipped to start at `start_offset`, the last to end at the capacity. At most
// `max_extents` extents are returned (0: no limit). A `start_offset` at or past the capacity
// yields an empty, complete page. The caller validates generation and `since`.
ChangedExtentsPage FindChangedExtents(std::span<const uint8_t> map, const TrackingGeometry& geometry,
                                      uint8_t since, uint64_t start_offset, size_t max_extents);

// Index of the first byte in [from, map.size()) that is greater than `since` (`map.size()` if
// none), and of the first that is not. Exposed for tests and benchmarks.
size_t FindFirstAbove(std::span<const uint8_t> map, size_t from, uint8_t since);
size_t FindFirstNotAbove(std::span<const uint8_t> map, size_t from, uint8_t since);

// The vector instructions the functions above use: the best the CPU offers, picked at first use
// (all give identical results; SSE2 is the x86-64 baseline).
enum class ScanIsa { kScalar, kSse2, kAvx2 };
ScanIsa ActiveScanIsa();
const char* ScanIsaName(ScanIsa isa);
// For tests and benchmarks: use `isa` from now on, process-wide. Returns false, changing nothing,
// when this CPU or build cannot run it. Not to be called while another thread scans.
bool SetScanIsaForTesting(ScanIsa isa);

}  // namespace cbt

#endif  // CBT_CORE_CHANGED_EXTENTS_H_
