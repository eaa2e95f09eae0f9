// The blksnap backend: cbt::agent::Backend over the blksnap kernel module (any flavour, see
// flavour.h), with every system call going through cbt::blksnap::Kernel.
#ifndef CBT_AGENT_BLKSNAP_BLKSNAP_BACKEND_H_
#define CBT_AGENT_BLKSNAP_BLKSNAP_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "backend/backend.h"
#include "blksnap/kernel.h"
#include "state/state_store.h"

namespace cbt::blksnap {

struct BlksnapBackendOptions {
  std::string forced_flavour = "auto";  // "auto", "lk6.15", "v7", "val7"
  // One WAIT_EVENT wait, in jiffies (the module's "timeout_ms" is really jiffies): ~100 ms at
  // HZ=250. Also bounds how long releasing a snapshot or Shutdown() waits for a watcher.
  uint32_t event_wait_jiffies = 25;
};

// Orphans (what a restart does with snapshots a crashed agent left in the kernel):
//  - Ownership is decided by the state file only. CreateSnapshot writes a PENDING record
//    (devices, diff storage, and the ids the kernel listed just before) BEFORE
//    SNAPSHOT_CREATE, adds the id as soon as CREATE returns, and turns the record COMPLETE only
//    after SNAPSHOT_TAKE and the image check, just before the call answers. A rollback removes
//    the record once the snapshot is destroyed.
//  - At start-up a COMPLETE record whose snapshot the kernel still holds is kept, with a new
//    event watcher (known_to_agent = true); one the kernel no longer holds is forgotten. A
//    PENDING record is an orphan — its caller never received the snapshot (the agent died after
//    create, after an add, after the take, before answering) — and its snapshot is released
//    (SNAPSHOT_DESTROY). Without an id (killed right after CREATE ran), the orphan is the single
//    snapshot the kernel lists that was not listed before the intent and that no record
//    accounts for; if there are several such snapshots nothing is released and a warning is
//    logged, because one of them may belong to another tool. If the release fails, the pending
//    record is kept and the release is retried at the next start.
//  - Snapshots no record accounts for (made by other tools) are only listed, with
//    known_to_agent = false; the agent never releases them on its own.
//  - A ReleaseSnapshot interrupted by a crash is either done (the kernel destroyed the snapshot:
//    the record is forgotten at start-up) or not (the snapshot is kept; the caller retries).
//
// Detects the flavour, opens the control (and, for val7, the filter) device, loads `state`
// (may be null: nothing is persisted and there are no orphans to find), keeps the trackers
// whose CBT still answers, releases orphans and restarts event watchers for the snapshots the
// agent made that the kernel still holds. `events` may be null; it and `state` must outlive
// the backend.
absl::StatusOr<std::unique_ptr<cbt::agent::Backend>> NewBlksnapBackend(
    std::unique_ptr<Kernel> kernel, const BlksnapBackendOptions& options,
    cbt::agent::EventSink* events, cbt::agent::StateStore* state);

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_BLKSNAP_BACKEND_H_
