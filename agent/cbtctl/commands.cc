#include "cbtctl/commands.h"

#include <map>

namespace cbt::cbtctl {

CommandHandler FindHandler(const std::string& name) {
  static const std::map<std::string, CommandHandler> handlers = {
      {"capabilities", RunCapabilities},
      {"echo", RunEcho},
      {"health", RunHealth},
      {"attach", RunAttach},
      {"detach", RunDetach},
      {"tracker", RunTracker},
      {"trackers", RunTrackers},
      {"snapshot create", RunSnapshotCreate},
      {"snapshot release", RunSnapshotRelease},
      {"snapshot get", RunSnapshotGet},
      {"snapshots", RunSnapshots},
      {"watch", RunWatch},
      {"cbt info", RunCbtInfo},
      {"cbt dirty", RunCbtDirty},
      {"cbt map", RunCbtMap},
      {"cbt extents", RunCbtExtents},
  };
  auto it = handlers.find(name);
  return it == handlers.end() ? nullptr : it->second;
}

int UsageError(CommandContext& context, const absl::Status& error) {
  context.err << FormatUsageError(error, context.invocation) << std::flush;
  return kExitUsage;
}

}  // namespace cbt::cbtctl
