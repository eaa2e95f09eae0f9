#include "server/request_validation.h"

#include "absl/strings/str_cat.h"
#include "core/tracking_geometry.h"

namespace cbt::agent {

absl::Status ValidatePath(const std::string& path, const char* what) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (path.size() > kMaxPathLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", path.size(), " bytes long (at most ", kMaxPathLength, ")"));
  }
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " contains a NUL byte"));
  }
  if (path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", path, "' is not an absolute path (e.g. /dev/sdb1)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Uuid> ParseSnapshotId(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("snapshot_id is empty");
  auto id = ParseUuid(text);
  if (!id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot_id: ", id.status().message()));
  }
  return id;
}

absl::Status ValidateCreateSnapshot(const cbtagent::v1::CreateSnapshotRequest& request) {
  if (request.devices().empty()) {
    return absl::InvalidArgumentError("devices is empty: name at least one tracked device");
  }
  if (static_cast<size_t>(request.devices_size()) > kMaxDevicesPerSnapshot) {
    return absl::InvalidArgumentError(absl::StrCat("a snapshot takes at most ",
                                                   kMaxDevicesPerSnapshot, " devices, got ",
                                                   request.devices_size()));
  }
  for (const std::string& device : request.devices()) {
    if (absl::Status status = ValidatePath(device, "device"); !status.ok()) return status;
  }
  if (!request.has_diff_storage()) {
    return absl::InvalidArgumentError(
        "diff_storage is missing: give a directory, file or block device and a limit");
  }
  const auto& storage = request.diff_storage();
  if (absl::Status status = ValidatePath(storage.path(), "diff_storage.path"); !status.ok()) {
    return status;
  }
  if (storage.limit_bytes() == 0 || storage.limit_bytes() % kSectorSize != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "diff_storage.limit_bytes must be a positive multiple of 512, got ",
        storage.limit_bytes()));
  }
  return absl::OkStatus();
}

absl::StatusOr<MapRange> ResolveMapRange(uint64_t offset, uint64_t length, uint64_t block_count) {
  if (offset > block_count) {
    return absl::OutOfRangeError(absl::StrCat("offset ", offset, " lies past the CBT map of ",
                                              block_count, " bytes"));
  }
  if (length == 0) return MapRange{offset, block_count - offset};
  if (length > block_count - offset) {
    return absl::OutOfRangeError(absl::StrCat("range of ", length, " bytes at offset ", offset,
                                              " runs past the CBT map of ", block_count,
                                              " bytes"));
  }
  return MapRange{offset, length};
}

absl::Status CheckDirtyRangeCount(int count) {
  if (count > 0 && static_cast<size_t>(count) > kMaxDirtyRanges) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxDirtyRanges, " ranges per call, got ", count));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SectorRange>> ToSectorRanges(
    const google::protobuf::RepeatedPtrField<cbtagent::v1::ByteRange>& ranges,
    uint64_t capacity_bytes, uint64_t* marked_bytes) {
  if (ranges.empty()) return absl::InvalidArgumentError("ranges is empty");
  if (absl::Status status = CheckDirtyRangeCount(ranges.size()); !status.ok()) return status;
  std::vector<SectorRange> sectors;
  sectors.reserve(ranges.size());
  unsigned __int128 total = 0;  // 65,536 ranges of up to 2^64 bytes each
  for (int i = 0; i < ranges.size(); ++i) {
    const auto& range = ranges[i];
    if (range.length() == 0) {
      return absl::InvalidArgumentError(absl::StrCat("ranges[", i, "] has length 0"));
    }
    if (range.offset() >= capacity_bytes || range.length() > capacity_bytes - range.offset()) {
      return absl::OutOfRangeError(absl::StrCat(
          "ranges[", i, "] (", range.length(), " bytes at offset ", range.offset(),
          ") runs past the device's ", capacity_bytes, " bytes"));
    }
    const uint64_t first = range.offset() >> kSectorShift;
    const uint64_t end = range.offset() + range.length();  // no overflow: checked above
    const uint64_t last_exclusive = (end >> kSectorShift) + ((end & (kSectorSize - 1)) ? 1 : 0);
    sectors.push_back({first, last_exclusive - first});
    total += static_cast<unsigned __int128>(last_exclusive - first) << kSectorShift;
  }
  *marked_bytes = total > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(total);
  return sectors;
}

absl::StatusOr<uint8_t> ParseChangesNumber(uint32_t value) {
  if (value > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("base_changes_number ", value, " is out of range (0..255)"));
  }
  return static_cast<uint8_t>(value);
}

}  // namespace cbt::agent
