// Human-readable rendering of the API's replies (the default output).
#ifndef CBT_AGENT_CBTCTL_HUMAN_OUTPUT_H_
#define CBT_AGENT_CBTCTL_HUMAN_OUTPUT_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "cbtagent/v1/agent.pb.h"
#include "cbtctl/output.h"

namespace cbt::cbtctl {

namespace v1 = ::cbtagent::v1;

// "2024-05-01T10:00:00.123456789Z"; "unknown" for 0.
std::string FormatTime(int64_t unix_nanos);
std::string BackendName(v1::BackendKind backend);    // "blksnap", "ublk"
std::string FlavourName(v1::BlksnapFlavour flavour);  // "lk6.15", "v7", "val7"
std::string StateName(v1::SnapshotState state);       // "active", "corrupted"

Fields CapabilitiesFields(const v1::Capabilities& capabilities);
Fields TrackerFields(const v1::Tracker& tracker);
Fields CbtInfoFields(const v1::CbtInfo& info);
void WriteTrackerTable(const v1::ListTrackersResponse& list, std::ostream& out);
void WriteSnapshot(const v1::Snapshot& snapshot, std::ostream& out);
// One line: "<time>  <snapshot id>  corrupted /dev/sdb1 (8:17): errno 28 (No space ...)".
std::string FormatEvent(const v1::SnapshotEvent& event);

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_HUMAN_OUTPUT_H_
