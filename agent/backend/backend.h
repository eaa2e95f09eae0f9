// Backend: what the agent needs from a kernel mechanism (blksnap, or the ublk fallback).
//
// The gRPC layer validates requests, maps absl::Status to gRPC codes (agent/server/
// status_mapping.h) and turns these plain structs into API messages; backends never see
// protobuf. Every method is thread-safe. Errors carry messages that name the device or snapshot
// and, for kernel failures, the errno ("... failed: No such device (errno 19)"); the status
// code follows the convention in status_mapping.h:
//   NotFound           unknown device / tracker / snapshot
//   InvalidArgument    malformed input (relative path, not a block device, zero limit, ...)
//   OutOfRange         offsets or lengths past the device or map
//   FailedPrecondition state forbids it (device in a snapshot, diff storage on a snapshotted
//                      device); with cbt::kFullBackupRequiredPayload for generation changes
//   AlreadyExists      the device already belongs to another snapshot
//   DataLoss           corrupted CBT
//   ResourceExhausted  diff storage full
//   Unavailable        the kernel module / device disappeared
//   PermissionDenied   the kernel refused (EPERM/EACCES)
#ifndef CBT_AGENT_BACKEND_BACKEND_H_
#define CBT_AGENT_BACKEND_BACKEND_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/cbt_map.h"
#include "core/generation_id.h"

namespace cbt::agent {

struct DeviceNumber {
  uint32_t major = 0;
  uint32_t minor = 0;
  friend bool operator==(const DeviceNumber&, const DeviceNumber&) = default;
};

struct TrackerState {
  std::string device;          // as attached
  std::string resolved_path;   // canonical
  DeviceNumber number;
  uint64_t capacity_bytes = 0;
  std::string io_path;         // where applications must do their I/O
  std::string snapshot_id;     // canonical UUID text, empty if none
  std::string image_path;      // empty if none
};

struct DiffStorageSpec {
  std::string path;
  uint64_t limit_bytes = 0;
};

struct SnapshotDeviceState {
  std::string device;
  std::string resolved_path;
  DeviceNumber number;
  std::string image_path;
  int32_t error_code = 0;  // 0 or negative errno
};

struct SnapshotState {
  Uuid id;
  std::vector<SnapshotDeviceState> devices;
  DiffStorageSpec diff_storage;
  bool known_to_agent = true;
  bool corrupted = false;
  int64_t created_unix_nanos = 0;
  uint64_t diff_storage_used_bytes = 0;
};

struct SnapshotEvent {
  enum class Kind { kCorrupted, kNoSpace, kReleased };
  Uuid snapshot_id;
  Kind kind = Kind::kCorrupted;
  int64_t time_unix_nanos = 0;
  // kCorrupted:
  std::string device;
  DeviceNumber number;
  int32_t errno_value = 0;  // positive
  // kNoSpace:
  uint64_t requested_bytes = 0;
};

// Receives events from backend threads; must not block for long.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void Publish(const SnapshotEvent& event) = 0;
};

// A range of 512-byte sectors.
struct SectorRange {
  uint64_t sector = 0;
  uint64_t count = 0;
};

enum class BackendKind { kBlksnap, kUblk };

struct BackendDescription {
  BackendKind kind = BackendKind::kBlksnap;
  std::string reason;          // why this backend / interface was chosen
  // blksnap:
  std::string blksnap_flavour;  // "lk6.15", "v7", "val7"
  std::string module_version;
  std::string control_device;
  // ublk:
  uint64_t ublk_features = 0;
  bool user_recovery = false;
  bool ioctl_encoded_commands = false;
  uint32_t chunk_size_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual BackendDescription Describe() const = 0;

  // Idempotent: an already tracked device returns its state with *already_attached = true.
  virtual absl::StatusOr<TrackerState> AttachTracker(const std::string& device,
                                                     bool* already_attached) = 0;
  virtual absl::Status DetachTracker(const std::string& device) = 0;
  virtual absl::StatusOr<TrackerState> GetTracker(const std::string& device) = 0;
  virtual absl::StatusOr<std::vector<TrackerState>> ListTrackers() = 0;

  // create -> add each device -> start watching events -> take; rolls back on failure.
  virtual absl::StatusOr<SnapshotState> CreateSnapshot(const std::vector<std::string>& devices,
                                                       const DiffStorageSpec& diff_storage) = 0;
  virtual absl::Status ReleaseSnapshot(const Uuid& id) = 0;
  virtual absl::StatusOr<SnapshotState> GetSnapshot(const Uuid& id) = 0;
  virtual absl::StatusOr<std::vector<SnapshotState>> ListSnapshots() = 0;

  virtual absl::StatusOr<CbtInfo> GetCbtInfo(const std::string& device) = 0;
  // Copies map bytes [offset, offset + length) into `out` (length bytes).
  virtual absl::Status ReadCbtMap(const std::string& device, uint64_t offset, uint64_t length,
                                  uint8_t* out) = 0;
  virtual absl::Status MarkDirty(const std::string& device,
                                 const std::vector<SectorRange>& ranges) = 0;

  // Stops background threads (event watchers, I/O loops as the backend requires). Kernel
  // objects (trackers, snapshots) are left as they are. Called once, before destruction.
  virtual void Shutdown() = 0;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_BACKEND_BACKEND_H_
