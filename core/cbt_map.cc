#include "core/cbt_map.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace cbt {
namespace {

// Zeroed byte array of `count` bytes, or nullptr when the allocation fails.
std::unique_ptr<uint8_t[]> NewZeroedMap(uint64_t count) {
  return std::unique_ptr<uint8_t[]>(new (std::nothrow) uint8_t[std::max<uint64_t>(count, 1)]());
}

std::unique_ptr<uint8_t[]> CopyMap(const std::vector<uint8_t>& bytes, uint64_t count) {
  auto map = NewZeroedMap(count);
  // An empty vector's data() may be null, and memcpy from null is undefined even for 0 bytes.
  if (map && count != 0) std::memcpy(map.get(), bytes.data(), count);
  return map;
}

inline void MarkByte(uint8_t& byte, uint8_t number) {
  std::atomic_ref<uint8_t> ref(byte);
  if (ref.load(std::memory_order_relaxed) < number) ref.store(number, std::memory_order_relaxed);
}

// previous is always active - 1, except right after the wrap-around at 256 (255 then 1).
bool NumbersConsistent(uint8_t previous, uint8_t active) {
  return (active >= 1 && previous == active - 1) || (previous == 255 && active == 1);
}

// Maps larger than this are refused rather than attempted: 2^32 blocks is beyond any device
// the tracking parameters allow at their defaults (2^26-byte blocks cover 256 PiB then).
constexpr uint64_t kMaximumBlockCount = uint64_t{1} << 32;

}  // namespace

bool IsFullBackupRequired(const absl::Status& status) {
  return status.code() == absl::StatusCode::kFailedPrecondition &&
         status.GetPayload(kFullBackupRequiredPayload).has_value();
}

uint8_t EffectiveChangesBase(uint8_t base_changes_number, uint8_t current_changes_number) {
  return base_changes_number == 255 && current_changes_number != 255 ? 0 : base_changes_number;
}

absl::Status ValidateChangesBase(const CbtInfo& current, const GenerationId& base_generation,
                                 uint8_t base_changes_number) {
  if (current.corrupted) {
    return absl::DataLossError(
        "the CBT map is corrupted; it is reset with a new generation at the next snapshot, and "
        "the next backup must be a full one");
  }
  if (base_generation != current.generation_id) {
    absl::Status status = absl::FailedPreconditionError(absl::StrCat(
        "full backup required: the CBT generation changed (base ", base_generation.ToString(),
        ", device now ", current.generation_id.ToString(), "), the change history restarted"));
    status.SetPayload(kFullBackupRequiredPayload, absl::Cord(current.generation_id.ToString()));
    return status;
  }
  if (EffectiveChangesBase(base_changes_number, current.changes_number) >
      current.changes_number) {
    return absl::InvalidArgumentError(absl::StrCat(
        "base changes number ", int{base_changes_number},
        " is newer than the device's current changes number ", int{current.changes_number}));
  }
  return absl::OkStatus();
}

CbtMap::CbtMap(TrackingParams params, CbtMapState state)
    : params_(params),
      geometry_(state.geometry),
      previous_(state.snap_number_previous),
      active_(state.snap_number_active),
      generation_(state.generation_id),
      corrupted_(state.corrupted) {}

absl::StatusOr<std::unique_ptr<CbtMap>> CbtMap::Create(uint64_t capacity_sectors,
                                                       const TrackingParams& params) {
  auto map = std::unique_ptr<CbtMap>(new CbtMap(params, CbtMapState{}));
  if (absl::Status status = map->Reset(capacity_sectors); !status.ok()) return status;
  return map;
}

absl::StatusOr<std::unique_ptr<CbtMap>> CbtMap::FromState(CbtMapState state,
                                                          const TrackingParams& params) {
  auto expected = ChooseTrackingGeometry(state.geometry.capacity_sectors, params);
  if (!expected.ok()) return expected.status();
  const uint64_t count = state.geometry.block_count;
  if (expected->block_shift != state.geometry.block_shift || expected->block_count != count ||
      state.read_map.size() != count || state.write_map.size() != count ||
      !NumbersConsistent(state.snap_number_previous, state.snap_number_active)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "saved CBT state is inconsistent: capacity ", state.geometry.capacity_sectors,
        " sectors, block shift ", state.geometry.block_shift, " (expected ",
        expected->block_shift, "), ", count, " blocks, maps of ", state.read_map.size(), "/",
        state.write_map.size(), " bytes, numbers ", int{state.snap_number_previous}, "/",
        int{state.snap_number_active}));
  }
  // A write-map byte is at most the active number and a read-map byte at most the previous one
  // (the read map is a copy of the write map taken when active became previous, or a SetBoth
  // mark with previous; after the wrap-around previous is 255). A byte above is not from a map.
  const size_t write_above = FindFirstAbove(state.write_map, 0, state.snap_number_active);
  const size_t read_above = FindFirstAbove(state.read_map, 0, state.snap_number_previous);
  if (write_above != count || read_above != count) {
    const bool in_write = write_above != count;
    const size_t block = in_write ? write_above : read_above;
    return absl::InvalidArgumentError(absl::StrCat(
        "saved CBT state is inconsistent: ", in_write ? "write" : "read", "-map block ", block,
        " holds ", int{in_write ? state.write_map[block] : state.read_map[block]},
        ", above the ", in_write ? "active" : "previous", " number ",
        int{in_write ? state.snap_number_active : state.snap_number_previous}));
  }
  auto read_map = CopyMap(state.read_map, count);
  auto write_map = CopyMap(state.write_map, count);
  if (!read_map || !write_map) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate a CBT map of 2 x ", count, " bytes"));
  }
  auto map = std::unique_ptr<CbtMap>(new CbtMap(params, std::move(state)));
  map->read_map_ = std::move(read_map);
  map->write_map_ = std::move(write_map);
  return map;
}

absl::Status CbtMap::Reset(uint64_t capacity_sectors) {
  auto geometry = ChooseTrackingGeometry(capacity_sectors, params_);
  if (!geometry.ok()) return geometry.status();
  if (geometry->block_count > kMaximumBlockCount) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a device of ", capacity_sectors, " sectors needs ", geometry->block_count,
        " tracking blocks, more than the ", kMaximumBlockCount, " supported"));
  }
  auto read_map = NewZeroedMap(geometry->block_count);
  auto write_map = NewZeroedMap(geometry->block_count);
  if (!read_map || !write_map) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate a CBT map of 2 x ", geometry->block_count, " bytes"));
  }
  const GenerationId generation = NewRandomUuid();
  std::lock_guard<std::mutex> lock(mu_);
  gate_.LockExclusive();
  geometry_ = *geometry;
  read_map_ = std::move(read_map);
  write_map_ = std::move(write_map);
  previous_ = 0;
  active_ = 1;
  generation_ = generation;
  corrupted_.store(false, std::memory_order_relaxed);
  gate_.UnlockExclusive();
  return absl::OkStatus();
}

void CbtMap::Switch() {
  std::lock_guard<std::mutex> lock(mu_);
  gate_.LockExclusive();
  previous_ = active_;
  if (active_ == 255) {
    active_ = 1;
    std::memset(write_map_.get(), 0, geometry_.block_count);
    generation_ = NewRandomUuid();
  } else {
    ++active_;
    std::memcpy(read_map_.get(), write_map_.get(), geometry_.block_count);
  }
  gate_.UnlockExclusive();
}

CbtMap::BlockSpan CbtMap::SpanOf(uint64_t sector, uint64_t count) const {
  const uint32_t shift = geometry_.sectors_per_block_shift();
  BlockSpan span;
  span.first = sector >> shift;
  uint64_t end_sector = 0;
  if (__builtin_add_overflow(sector, count - 1, &end_sector)) {
    span.overflow = true;
    span.last = UINT64_MAX;
  } else {
    span.last = end_sector >> shift;
  }
  return span;
}

bool CbtMap::MarkBlocks(uint8_t* map, uint64_t block_count, const BlockSpan& span,
                        uint8_t number) {
  const uint64_t stop = std::min(span.last, block_count == 0 ? 0 : block_count - 1);
  if (block_count != 0) {
    for (uint64_t i = span.first; i <= stop; ++i) MarkByte(map[i], number);
  }
  return !span.overflow && span.last < block_count;
}

absl::Status CbtMap::OutOfRange(const char* what, uint64_t sector, uint64_t count) const {
  return absl::OutOfRangeError(absl::StrCat(
      what, " of ", count, " sectors at sector ", sector, " reaches past the CBT map (",
      geometry_.block_count, " blocks of ", geometry_.block_size(), " bytes for a device of ",
      geometry_.capacity_sectors, " sectors)"));
}

absl::Status CbtMap::CorruptedError() const {
  return absl::DataLossError(
      "the CBT map is corrupted (a write was tracked past the end of the device); it is reset "
      "with a new generation at the next snapshot, and the next backup must be a full one");
}

absl::Status CbtMap::Set(uint64_t sector, uint64_t count) {
  // The hot path, kept a leaf: a non-empty range that ends inside a healthy map, marked inside
  // the gate. Everything else (empty range, gate closed for a switch or reset, corrupted map,
  // range past the end or wrapping 64 bits) takes the mutex path, which has the same semantics.
  if (count != 0 && gate_.TryEnterShared()) [[likely]] {
    const uint32_t shift = geometry_.sectors_per_block_shift();
    uint64_t last_sector = 0;
    if (!corrupted_.load(std::memory_order_relaxed) &&
        !__builtin_add_overflow(sector, count - 1, &last_sector) &&
        (last_sector >> shift) < geometry_.block_count) [[likely]] {
      uint8_t* const map = write_map_.get();
      const uint8_t number = active_;
      const uint64_t last = last_sector >> shift;
      for (uint64_t i = sector >> shift; i <= last; ++i) MarkByte(map[i], number);
      gate_.ExitShared();
      return absl::OkStatus();
    }
    gate_.ExitShared();
  }
  return SetSlow(sector, count);
}

absl::Status CbtMap::SetSlow(uint64_t sector, uint64_t count) {
  if (count == 0) return absl::OkStatus();
  return SetUnderMutex(sector, count, false);
}

absl::Status CbtMap::SetBoth(uint64_t sector, uint64_t count) {
  if (count == 0) return absl::OkStatus();
  return SetUnderMutex(sector, count, true);
}

// Under mu_ no switch or reset can run, so the write map may be marked directly; concurrent
// fast-path markers only ever store the same active number.
absl::Status CbtMap::SetUnderMutex(uint64_t sector, uint64_t count, bool both) {
  std::lock_guard<std::mutex> lock(mu_);
  if (corrupted_.load(std::memory_order_relaxed)) return CorruptedError();
  const BlockSpan span = SpanOf(sector, count);
  if (!MarkBlocks(write_map_.get(), geometry_.block_count, span, active_)) {
    if (!both) {
      corrupted_.store(true, std::memory_order_relaxed);
      return OutOfRange("a write", sector, count);
    }
    return OutOfRange("a dirty range", sector, count);
  }
  if (both) MarkBlocks(read_map_.get(), geometry_.block_count, span, previous_);
  return absl::OkStatus();
}

CbtInfo CbtMap::Info() const {
  std::lock_guard<std::mutex> lock(mu_);
  CbtInfo info;
  info.capacity_bytes = geometry_.capacity_bytes();
  info.block_size = static_cast<uint32_t>(geometry_.block_size());
  info.block_count = geometry_.block_count;
  info.generation_id = generation_;
  info.changes_number = previous_;
  info.corrupted = corrupted_.load(std::memory_order_relaxed);
  return info;
}

TrackingGeometry CbtMap::geometry() const {
  std::lock_guard<std::mutex> lock(mu_);
  return geometry_;
}

absl::Status CbtMap::ReadMap(uint64_t offset, uint64_t length, uint8_t* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (corrupted_.load(std::memory_order_relaxed)) return CorruptedError();
  const uint64_t count = geometry_.block_count;
  if (offset > count || length > count - offset) {
    return absl::OutOfRangeError(absl::StrCat("CBT map range of ", length, " bytes at offset ",
                                              offset, " lies outside the map of ", count,
                                              " blocks"));
  }
  if (length != 0) std::memcpy(out, read_map_.get() + offset, length);
  return absl::OkStatus();
}

absl::StatusOr<ChangedExtentsPage> CbtMap::ChangedExtents(const GenerationId& base_generation,
                                                          uint8_t base_changes_number,
                                                          uint64_t start_offset,
                                                          size_t max_extents) const {
  std::lock_guard<std::mutex> lock(mu_);
  CbtInfo current;
  current.generation_id = generation_;
  current.changes_number = previous_;
  current.corrupted = corrupted_.load(std::memory_order_relaxed);
  if (absl::Status status = ValidateChangesBase(current, base_generation, base_changes_number);
      !status.ok()) {
    return status;
  }
  return FindChangedExtents({read_map_.get(), geometry_.block_count}, geometry_,
                            EffectiveChangesBase(base_changes_number, previous_), start_offset,
                            max_extents);
}

CbtMapState CbtMap::ExportState() const {
  std::lock_guard<std::mutex> lock(mu_);
  CbtMapState state;
  state.geometry = geometry_;
  state.snap_number_previous = previous_;
  state.snap_number_active = active_;
  state.generation_id = generation_;
  state.corrupted = corrupted_.load(std::memory_order_relaxed);
  state.read_map.assign(read_map_.get(), read_map_.get() + geometry_.block_count);
  // The write map is read inside the exclusive section so that no marker is half-way.
  gate_.LockExclusive();
  state.write_map.assign(write_map_.get(), write_map_.get() + geometry_.block_count);
  gate_.UnlockExclusive();
  return state;
}

}  // namespace cbt
