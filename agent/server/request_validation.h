// Checks on client input that do not need the backend, with messages a person can act on.
// Every function returns InvalidArgument or OutOfRange on bad input and never crashes on any
// input (a fuzz target drives these).
#ifndef CBT_AGENT_SERVER_REQUEST_VALIDATION_H_
#define CBT_AGENT_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backend/backend.h"
#include "cbtagent/v1/agent.pb.h"

namespace cbt::agent {

inline constexpr size_t kMaxPathLength = 4096;
inline constexpr size_t kMaxDevicesPerSnapshot = 64;
inline constexpr size_t kMaxDirtyRanges = 65536;

// Absolute, non-empty, no NUL byte, at most kMaxPathLength bytes. `what` names the field.
absl::Status ValidatePath(const std::string& path, const char* what);

absl::StatusOr<Uuid> ParseSnapshotId(const std::string& text);

// 1..kMaxDevicesPerSnapshot device paths, each valid; a positive diff-storage limit that is a
// multiple of 512 and an absolute diff-storage path.
absl::Status ValidateCreateSnapshot(const cbtagent::v1::CreateSnapshotRequest& request);

// The map range a ReadCbtMap request asks for; length 0 means "to the end of the map".
struct MapRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};
absl::StatusOr<MapRange> ResolveMapRange(uint64_t offset, uint64_t length, uint64_t block_count);

// InvalidArgument when a MarkDirty request has more than kMaxDirtyRanges ranges.
absl::Status CheckDirtyRangeCount(int count);

// Byte ranges of a MarkDirty request as sector ranges, widened to whole sectors. Each range
// must be non-empty and lie inside the device; 1..kMaxDirtyRanges ranges. *marked_bytes gets
// the sum of the widened lengths (saturating at 2^64 - 1; overlapping ranges count twice).
absl::StatusOr<std::vector<SectorRange>> ToSectorRanges(
    const google::protobuf::RepeatedPtrField<cbtagent::v1::ByteRange>& ranges,
    uint64_t capacity_bytes, uint64_t* marked_bytes);

// A base changes number from the wire (uint32) as the map's byte.
absl::StatusOr<uint8_t> ParseChangesNumber(uint32_t value);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_REQUEST_VALIDATION_H_
