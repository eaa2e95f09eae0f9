#include "server/backend_gauges.h"

#include <algorithm>

namespace cbt::agent {

std::vector<GaugeSample> CollectBackendGauges(Backend& backend) {
  std::vector<GaugeSample> samples;
  auto trackers = backend.ListTrackers();
  auto snapshots = backend.ListSnapshots();
  samples.push_back({"cbt_agent_trackers", "Devices with change tracking attached.", {},
                     trackers.ok() ? static_cast<double>(trackers->size()) : 0});
  samples.push_back({"cbt_agent_snapshots", "Snapshots held by the kernel.", {},
                     snapshots.ok() ? static_cast<double>(snapshots->size()) : 0});
  if (snapshots.ok()) {
    for (const SnapshotState& s : *snapshots) {
      samples.push_back({"cbt_agent_diff_storage_limit_bytes",
                         "Diff storage limit of a snapshot.",
                         {{"snapshot", s.id.ToString()}},
                         static_cast<double>(s.diff_storage.limit_bytes)});
    }
    for (const SnapshotState& s : *snapshots) {
      samples.push_back({"cbt_agent_diff_storage_used_bytes",
                         "Copy-on-write data stored for a snapshot (0 when the kernel does not "
                         "report it).",
                         {{"snapshot", s.id.ToString()}},
                         static_cast<double>(s.diff_storage_used_bytes)});
    }
  }
  if (trackers.ok()) {
    // Bounded so that a scrape never turns into a long read of many large maps.
    constexpr size_t kMaxDevicesScanned = 64;
    std::vector<uint8_t> map;
    for (size_t i = 0; i < std::min(trackers->size(), kMaxDevicesScanned); ++i) {
      const TrackerState& t = (*trackers)[i];
      auto info = backend.GetCbtInfo(t.device);
      if (!info.ok() || info->changes_number == 0) continue;
      map.resize(info->block_count);
      if (!backend.ReadCbtMap(t.device, 0, map.size(), map.data()).ok()) continue;
      const auto changed = std::count(map.begin(), map.end(), info->changes_number);
      samples.push_back({"cbt_agent_dirty_blocks",
                         "Tracking blocks written between the last two snapshots of a device.",
                         {{"device", t.resolved_path}},
                         static_cast<double>(changed)});
    }
  }
  return samples;
}

}  // namespace cbt::agent
