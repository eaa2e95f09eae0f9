// Block-size choice for a change-tracking map, as blksnap's cbt_map does it.
//
// A device of C sectors (512 bytes) is split into tracking blocks of 2^shift bytes. The shift
// starts at `minimum_shift` and grows while the block count exceeds `maximum_count`, stopping at
// `maximum_shift`; past that the count may exceed the target.
#ifndef CBT_CORE_TRACKING_GEOMETRY_H_
#define CBT_CORE_TRACKING_GEOMETRY_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace cbt {

inline constexpr uint32_t kSectorShift = 9;
inline constexpr uint64_t kSectorSize = uint64_t{1} << kSectorShift;

// The blksnap module parameters that shape the map (defaults are the module's defaults).
struct TrackingParams {
  uint32_t minimum_shift = 16;          // tracking_block_minimum_shift: 64 KiB
  uint64_t maximum_count = 2'097'152;   // tracking_block_maximum_count
  uint32_t maximum_shift = 26;          // tracking_block_maximum_shift: 64 MiB
};

struct TrackingGeometry {
  uint64_t capacity_sectors = 0;
  uint32_t block_shift = 0;  // log2 of the block size in bytes
  uint64_t block_count = 0;  // capacity rounded up to whole blocks

  uint64_t block_size() const { return uint64_t{1} << block_shift; }
  uint64_t capacity_bytes() const { return capacity_sectors << kSectorShift; }
  uint32_t sectors_per_block_shift() const { return block_shift - kSectorShift; }
};

// Fails with InvalidArgument for parameters the algorithm cannot use (shift below a sector,
// maximum below minimum, zero count) or a capacity whose byte size does not fit 64 bits.
absl::StatusOr<TrackingGeometry> ChooseTrackingGeometry(uint64_t capacity_sectors,
                                                        const TrackingParams& params = {});

}  // namespace cbt

#endif  // CBT_CORE_TRACKING_GEOMETRY_H_
