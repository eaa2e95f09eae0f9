#include "cbtctl/human_output.h"

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cbtctl/sizes.h"

namespace cbt::cbtctl {
namespace {

// Lower-case enum value name without its type prefix, or the number for unknown values.
std::string EnumLabel(const std::string& name, const std::string& prefix, int value) {
  if (name.empty()) return absl::StrCat(value);
  return absl::AsciiStrToLower(name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name);
}

std::string MajorMinor(uint32_t major, uint32_t minor) { return absl::StrCat(major, ":", minor); }

std::string OrNone(const std::string& value) { return value.empty() ? "none" : value; }

}  // namespace

std::string FormatTime(int64_t unix_nanos) {
  if (unix_nanos == 0) return "unknown";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixNanos(unix_nanos),
                          absl::UTCTimeZone());
}

std::string BackendName(v1::BackendKind backend) {
  return EnumLabel(v1::BackendKind_Name(backend), "BACKEND_KIND_", backend);
}

std::string FlavourName(v1::BlksnapFlavour flavour) {
  switch (flavour) {
    case v1::BLKSNAP_FLAVOUR_LK615: return "lk6.15";
    case v1::BLKSNAP_FLAVOUR_V7: return "v7";
    case v1::BLKSNAP_FLAVOUR_VAL7: return "val7";
    default: return EnumLabel(v1::BlksnapFlavour_Name(flavour), "BLKSNAP_FLAVOUR_", flavour);
  }
}

std::string StateName(v1::SnapshotState state) {
  return EnumLabel(v1::SnapshotState_Name(state), "SNAPSHOT_STATE_", state);
}

Fields CapabilitiesFields(const v1::Capabilities& caps) {
  Fields fields;
  fields.Add("agent version", caps.agent_version())
      .Add("kernel", caps.kernel_release())
      .Add("backend", BackendName(caps.backend()))
      .Add("backend reason", caps.backend_reason());
  if (caps.has_blksnap()) {
    fields.Add("blksnap flavour", FlavourName(caps.blksnap().flavour()))
        .Add("module version", caps.blksnap().module_version())
        .Add("control device", caps.blksnap().control_device());
  }
  if (caps.has_ublk()) {
    char features[32];
    std::snprintf(features, sizeof(features), "0x%llx",
                  static_cast<unsigned long long>(caps.ublk().features()));
    fields.Add("ublk features", features)
        .Add("user recovery", YesNo(caps.ublk().user_recovery()))
        .Add("ioctl encoded commands", YesNo(caps.ublk().ioctl_encoded_commands()))
        .Add("chunk size", FormatSize(caps.ublk().chunk_size_bytes()));
  }
  return fields;
}

Fields TrackerFields(const v1::Tracker& tracker) {
  Fields fields;
  fields.Add("device", tracker.device())
      .Add("resolved path", tracker.resolved_path())
      .Add("major:minor", MajorMinor(tracker.major(), tracker.minor()))
      .Add("capacity", FormatSize(tracker.capacity_bytes()))
      .Add("io path", tracker.io_path())
      .Add("snapshot", OrNone(tracker.snapshot_id()));
  if (!tracker.image_path().empty()) fields.Add("image", tracker.image_path());
  return fields;
}

Fields CbtInfoFields(const v1::CbtInfo& info) {
  Fields fields;
  fields.Add("device", info.device())
      .Add("capacity", FormatSize(info.capacity_bytes()))
      .Add("block size", FormatSize(info.block_size()))
      .Add("block count", absl::StrCat(info.block_count()))
      .Add("generation id", info.generation_id())
      .Add("changes number", absl::StrCat(info.changes_number()));
  return fields;
}

void WriteTrackerTable(const v1::ListTrackersResponse& list, std::ostream& out) {
  if (list.trackers().empty()) {
    out << "no tracked devices\n";
    return;
  }
  Table table({"DEVICE", "MAJ:MIN", "CAPACITY", "IO PATH", "SNAPSHOT"},
              {false, false, true, false, false});
  for (const v1::Tracker& tracker : list.trackers()) {
    std::string device = tracker.resolved_path().empty() ? tracker.device()
                                                         : tracker.resolved_path();
    table.AddRow({device, MajorMinor(tracker.major(), tracker.minor()),
                  FormatSize(tracker.capacity_bytes()), tracker.io_path(),
                  tracker.snapshot_id().empty() ? "-" : tracker.snapshot_id()});
  }
  table.Write(out);
}

void WriteSnapshot(const v1::Snapshot& snapshot, std::ostream& out) {
  Fields fields;
  fields.Add("id", snapshot.id())
      .Add("state", StateName(snapshot.state()))
      .Add("created", FormatTime(snapshot.created_unix_nanos()))
      .Add("known to agent", YesNo(snapshot.known_to_agent()));
  if (snapshot.has_diff_storage()) {
    fields.Add("diff storage", snapshot.diff_storage().path())
        .Add("diff storage limit", FormatSize(snapshot.diff_storage().limit_bytes()));
  }
  fields.Add("diff storage used", FormatSize(snapshot.diff_storage_used_bytes()))
      .Add("devices", absl::StrCat(snapshot.devices_size()));
  fields.Write(out);
  for (const v1::SnapshotDevice& device : snapshot.devices()) {
    out << "  " << device.device() << ":\n";
    Fields detail;
    detail.Add("resolved path", device.resolved_path())
        .Add("major:minor", MajorMinor(device.major(), device.minor()))
        .Add("image", device.image_path());
    if (device.error_code() != 0) {
      detail.Add("error", absl::StrCat(device.error_code(), " (", device.error(), ")"));
    }
    detail.Write(out, 4);
  }
}

std::string FormatEvent(const v1::SnapshotEvent& event) {
  std::string what;
  switch (event.kind_case()) {
    case v1::SnapshotEvent::kCorrupted: {
      const auto& corrupted = event.corrupted();
      what = absl::StrCat("corrupted ", corrupted.device().empty() ? "device" : corrupted.device(),
                          " (", MajorMinor(corrupted.major(), corrupted.minor()), "): errno ",
                          corrupted.errno_value());
      if (!corrupted.error().empty()) absl::StrAppend(&what, " (", corrupted.error(), ")");
      break;
    }
    case v1::SnapshotEvent::kNoSpace:
      what = absl::StrCat("diff storage low/full: requested ",
                          FormatSize(event.no_space().requested_bytes()));
      break;
    case v1::SnapshotEvent::kReleased:
      what = "released";
      break;
    default:
      what = "unknown event";
  }
  return absl::StrCat(FormatTime(event.time_unix_nanos()), "  ", event.snapshot_id(), "  ", what);
}

}  // namespace cbt::cbtctl
