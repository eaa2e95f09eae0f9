// A tracker's CBT map kept across a clean stop of the agent (ublk backend).
//
// At a clean stop the proxy is quiesced, so the map is complete: it is written to
// "<state dir>/cbt-map-<major>-<minor>.binpb" (CbtMapRecord, binary) together with what it
// belongs to. The next start takes it back only for the same origin device served by the same
// proxy device that survived in between (recovered, so no write can have bypassed tracking) —
// and deletes the file at once, so that a later crash cannot reuse a stale map: a missing file
// means "not stopped cleanly", and the map then starts a new generation (full backup required).
#ifndef CBT_AGENT_UBLK_BACKEND_SAVED_CBT_MAP_H_
#define CBT_AGENT_UBLK_BACKEND_SAVED_CBT_MAP_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "backend/backend.h"
#include "core/cbt_map.h"

namespace cbt::ublk {

// What a saved map belongs to; all of it must match to take the map back.
struct SavedCbtMapOwner {
  std::string resolved_path;
  agent::DeviceNumber number;
  uint32_t ublk_dev_id = 0;
};

std::string SavedCbtMapPath(const std::string& state_dir, const agent::DeviceNumber& number);

absl::Status SaveCbtMap(const std::string& state_dir, const SavedCbtMapOwner& owner,
                        const CbtMapState& state);

// The saved map of `owner`, and the file is removed. NotFound when there is none;
// FailedPrecondition when it belongs to something else (different device or proxy; the size
// is checked by the tracker, which knows the device's);
// DataLoss when unreadable. The file is removed in every case but NotFound.
absl::StatusOr<CbtMapState> TakeSavedCbtMap(const std::string& state_dir,
                                            const SavedCbtMapOwner& owner);

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_BACKEND_SAVED_CBT_MAP_H_
