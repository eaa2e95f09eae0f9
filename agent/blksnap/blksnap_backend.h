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

// Detects the flavour, opens the control (and, for val7, the filter) device, loads `state`
// (may be null: nothing is persisted), keeps the trackers whose CBT still answers and restarts
// event watchers for the snapshots the agent made that the kernel still holds. `events` may be
// null; it and `state` must outlive the backend.
absl::StatusOr<std::unique_ptr<cbt::agent::Backend>> NewBlksnapBackend(
    std::unique_ptr<Kernel> kernel, const BlksnapBackendOptions& options,
    cbt::agent::EventSink* events, cbt::agent::StateStore* state);

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_BLKSNAP_BACKEND_H_
