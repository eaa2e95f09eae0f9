// Gauges computed from the backend at scrape time.
#ifndef CBT_AGENT_SERVER_BACKEND_GAUGES_H_
#define CBT_AGENT_SERVER_BACKEND_GAUGES_H_

#include <vector>

#include "backend/backend.h"
#include "server/metrics.h"

namespace cbt::agent {

// cbt_agent_trackers, cbt_agent_snapshots, per-snapshot diff storage limit/use, and per device
// the number of tracking blocks changed in the last snapshot interval.
std::vector<GaugeSample> CollectBackendGauges(Backend& backend);

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_BACKEND_GAUGES_H_
