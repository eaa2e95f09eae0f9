// CbtMap: the change-block-tracking table of one device, with blksnap's cbt_map semantics.
//
// The device is split into tracking blocks (see tracking_geometry.h). Two byte maps hold, per
// block, the change number of the block's last write:
//  - the write map is marked by every write with the active number;
//  - the read map is the write map as it was at the last switch (snapshot take), and is what
//    readers of the map and of changed extents see.
// Numbers start at previous=0 / active=1. Switch makes previous := active, active++ and copies
// the write map into the read map; when active reaches 256 it restarts at 1, the write map is
// zeroed and a new generation id is drawn instead (the read map is left as it was). The
// "changes number" a backup records is `previous`; blocks changed since a backup that recorded
// (generation G, number K) are those whose read-map byte is greater than K, valid only while
// the generation is still G.
//
// Thread safety: every method may be called from any thread at any time. Set() is the hot path
// (I/O threads) and costs a few plain stores; a Set() that returned before Switch() started is
// in the read map after the switch. SetBoth(), Switch(), Reset() and the readers serialize on
// an internal mutex.
#ifndef CBT_CORE_CBT_MAP_H_
#define CBT_CORE_CBT_MAP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/changed_extents.h"
#include "core/generation_id.h"
#include "core/tracking_geometry.h"
#include "core/write_gate.h"

namespace cbt {

struct CbtInfo {
  uint64_t capacity_bytes = 0;
  uint32_t block_size = 0;
  uint64_t block_count = 0;
  GenerationId generation_id;
  uint8_t changes_number = 0;  // snap_number_previous
  bool corrupted = false;
};

// Everything a map is made of, to save it at a clean stop and load it again.
struct CbtMapState {
  TrackingGeometry geometry;
  uint8_t snap_number_previous = 0;
  uint8_t snap_number_active = 1;
  GenerationId generation_id;
  bool corrupted = false;
  std::vector<uint8_t> read_map;
  std::vector<uint8_t> write_map;
};

// Payload key set on the FailedPrecondition returned when a base generation no longer matches,
// so callers can tell "full backup required" from other precondition failures.
inline constexpr char kFullBackupRequiredPayload[] = "type.cbt-agent/full-backup-required";
bool IsFullBackupRequired(const absl::Status& status);

// Checks that an earlier backup's (generation, changes number) can be compared with `current`:
// FailedPrecondition with kFullBackupRequiredPayload when the generation differs,
// InvalidArgument when the base number is newer than the current one, DataLoss when corrupted.
absl::Status ValidateChangesBase(const CbtInfo& current, const GenerationId& base_generation,
                                 uint8_t base_changes_number);

// The number to compare read-map bytes with for a base backup that recorded
// `base_changes_number` in the current generation. A generation that began at a wrap-around
// starts at 255 (the take that wrapped reports previous = 255) and continues 1, 2, ...; a backup
// taken at that take therefore precedes every later number, so it compares as 0.
uint8_t EffectiveChangesBase(uint8_t base_changes_number, uint8_t current_changes_number);

class CbtMap {
 public:
  // A fresh map: zeroed maps, numbers 0/1, a new random generation.
  static absl::StatusOr<std::unique_ptr<CbtMap>> Create(uint64_t capacity_sectors,
                                                        const TrackingParams& params = {});
  // A map restored from ExportState(); fails with InvalidArgument if the state is inconsistent.
  static absl::StatusOr<std::unique_ptr<CbtMap>> FromState(CbtMapState state,
                                                           const TrackingParams& params = {});

  CbtMap(const CbtMap&) = delete;
  CbtMap& operator=(const CbtMap&) = delete;

  // Marks the blocks of sectors [sector, sector + count) in the write map with the active
  // number where they hold a lower one. count == 0 is a no-op. A range that reaches a block
  // past the map (or overflows 64 bits) marks what lies inside, then fails with OutOfRange and
  // leaves the map corrupted; every Set() on a corrupted map fails with DataLoss until Reset().
  absl::Status Set(uint64_t sector, uint64_t count);

  // Set() plus marking the read map with the previous number: for writes into a snapshot image
  // and for dirty marking, which must show up in the map being read now and in the next one.
  // Out-of-range fails with OutOfRange without corrupting the map (as the kernel does).
  absl::Status SetBoth(uint64_t sector, uint64_t count);

  // The snapshot-take step (see the header comment).
  void Switch();

  // Starts over for a device of `capacity_sectors`: new geometry, zeroed maps, numbers 0/1,
  // a new generation, corruption cleared. What the kernel does at take time after a resize or
  // a corruption.
  absl::Status Reset(uint64_t capacity_sectors);

  CbtInfo Info() const;
  TrackingGeometry geometry() const;
  bool corrupted() const { return corrupted_.load(std::memory_order_relaxed); }

  // Copies read-map bytes [offset, offset + length) to `out`. Fails with OutOfRange when the
  // range does not lie inside the block count (the kernel answers ENODATA), with DataLoss when
  // the map is corrupted (kernel: EFAULT).
  absl::Status ReadMap(uint64_t offset, uint64_t length, uint8_t* out) const;

  // Blocks changed since the backup that recorded (base_generation, base_changes_number); see
  // FindChangedExtents for paging. FailedPrecondition carrying kFullBackupRequiredPayload when
  // the generation differs; InvalidArgument when base_changes_number is newer than the map's
  // changes number; DataLoss when the map is corrupted.
  absl::StatusOr<ChangedExtentsPage> ChangedExtents(const GenerationId& base_generation,
                                                    uint8_t base_changes_number,
                                                    uint64_t start_offset,
                                                    size_t max_extents) const;

  CbtMapState ExportState() const;

 private:
  CbtMap(TrackingParams params, CbtMapState state);

  struct BlockSpan {
    uint64_t first = 0;
    uint64_t last = 0;      // inclusive; may lie past the map
    bool overflow = false;  // sector + count wrapped past 2^64
  };
  BlockSpan SpanOf(uint64_t sector, uint64_t count) const;
  // Marks blocks of `span` that lie in the map; returns false if the span reaches past it.
  static bool MarkBlocks(uint8_t* map, uint64_t block_count, const BlockSpan& span,
                         uint8_t number);
  absl::Status OutOfRange(const char* what, uint64_t sector, uint64_t count) const;
  absl::Status CorruptedError() const;
  absl::Status SetUnderMutex(uint64_t sector, uint64_t count, bool both);
  // Set() for everything but an in-range write into a healthy map with the gate open.
  absl::Status SetSlow(uint64_t sector, uint64_t count);

  const TrackingParams params_;

  // Serializes SetBoth, Switch, Reset and readers. The read map, the numbers, the geometry and
  // the generation change only while it is held (and, for what Set() reads, inside gate_'s
  // exclusive section too).
  mutable std::mutex mu_;
  mutable WriteGate gate_;

  TrackingGeometry geometry_;
  uint8_t previous_ = 0;
  uint8_t active_ = 1;
  GenerationId generation_;
  std::atomic<bool> corrupted_{false};
  std::unique_ptr<uint8_t[]> read_map_;
  std::unique_ptr<uint8_t[]> write_map_;  // bytes accessed through std::atomic_ref by markers
};

}  // namespace cbt

#endif  // CBT_CORE_CBT_MAP_H_
