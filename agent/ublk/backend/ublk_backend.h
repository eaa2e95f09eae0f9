// The ublk backend: cbt::agent::Backend without any kernel CBT module. The agent serves every
// tracked device itself as a ublk proxy (/dev/ublkbN, see tracked_device.h), marks the CBT map
// (core/) on each write, and makes snapshots by copy-on-write into a diff storage with a second
// ublk device as the image (image_target.h) — blksnap's semantics in userspace.
//
// Differences from blksnap a caller can see:
//  - GetTracker().io_path is the proxy: applications must use it (the origin is claimed
//    exclusively and cannot be mounted while tracked).
//  - Snapshots live in the agent's memory. A clean stop releases them (kReleased event); after a
//    crash their image devices are removed at the next start and the records dropped (logged).
//  - Trackers survive both: the proxies are created with USER_RECOVERY and taken over by the
//    next agent. A clean stop saves each CBT map (saved_cbt_map.h) and the next start continues
//    it; after a crash the map starts a new generation (full backup required).
#ifndef CBT_AGENT_UBLK_BACKEND_UBLK_BACKEND_H_
#define CBT_AGENT_UBLK_BACKEND_UBLK_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "backend/backend.h"
#include "state/state_store.h"
#include "ublk/backend/tracked_device.h"
#include "ublk/cow/cow_store.h"

namespace cbt::ublk {

struct UblkBackendOptions {
  ProxyOptions proxy;
  uint64_t chunk_size = CowStore::kDefaultChunkSize;
  // Bound of each FIFREEZE of a file system mounted on a proxy at snapshot time.
  absl::Duration freeze_timeout = absl::Seconds(10);
  // Bound of draining in-flight I/O at take, release and stop.
  absl::Duration quiesce_timeout = absl::Seconds(30);
  // Why this backend was chosen, for Capabilities (e.g. "auto: blksnap unavailable (...)").
  std::string selection_reason;
};

// NotFound when ublk is missing (no /dev/ublk-control: ublk_drv is not loaded), else opens the
// control device, removes image devices of snapshots a crashed agent left, and takes over the
// proxies recorded in `state` (may be null: nothing is persisted; then Shutdown() removes the
// proxies). `events` may be null; both must outlive the backend.
absl::StatusOr<std::unique_ptr<agent::Backend>> NewUblkBackend(const UblkBackendOptions& options,
                                                               agent::EventSink* events,
                                                               agent::StateStore* state);

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_BACKEND_UBLK_BACKEND_H_
