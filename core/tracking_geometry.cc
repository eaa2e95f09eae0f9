#include "core/tracking_geometry.h"

#include "absl/strings/str_cat.h"

namespace cbt {
namespace {

// Number of whole blocks of 2^shift bytes that cover `capacity_sectors`, rounded up.
uint64_t CountByShift(uint64_t capacity_sectors, uint32_t shift) {
  const uint32_t sectors_shift = shift - kSectorShift;
  const uint64_t whole = capacity_sectors >> sectors_shift;
  const bool partial = (capacity_sectors & ((uint64_t{1} << sectors_shift) - 1)) != 0;
  return whole + (partial ? 1 : 0);
}

}  // namespace

absl::StatusOr<TrackingGeometry> ChooseTrackingGeometry(uint64_t capacity_sectors,
                                                        const TrackingParams& params) {
  if (params.minimum_shift < kSectorShift || params.maximum_shift > 62 ||
      params.maximum_shift < params.minimum_shift || params.maximum_count == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tracking parameters out of range: minimum_shift=", params.minimum_shift,
        " (>= 9), maximum_shift=", params.maximum_shift, " (minimum..62), maximum_count=",
        params.maximum_count, " (> 0)"));
  }
  if (capacity_sectors > (UINT64_MAX >> kSectorShift)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device capacity of ", capacity_sectors, " sectors overflows 64-bit bytes"));
  }
  TrackingGeometry geometry;
  geometry.capacity_sectors = capacity_sectors;
  uint32_t shift = params.minimum_shift;
  uint64_t count = CountByShift(capacity_sectors, shift);
  while (count > params.maximum_count && shift < params.maximum_shift) {
    ++shift;
    count = CountByShift(capacity_sectors, shift);
  }
  geometry.block_shift = shift;
  geometry.block_count = count;
  return geometry;
}

}  // namespace cbt
