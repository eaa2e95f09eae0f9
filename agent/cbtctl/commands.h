// The command handlers: one per command, each doing its calls and printing the replies.
#ifndef CBT_AGENT_CBTCTL_COMMANDS_H_
#define CBT_AGENT_CBTCTL_COMMANDS_H_

#include <ostream>
#include <string>

#include <grpcpp/grpcpp.h>

#include "cbtagent/v1/agent.grpc.pb.h"
#include "cbtctl/command_line.h"
#include "cbtctl/connection.h"
#include "cbtctl/errors.h"
#include "cbtctl/output.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace cbt::cbtctl {

struct CommandContext {
  const Invocation& invocation;
  ::cbtagent::v1::CbtAgent::Stub& agent;
  ::grpc::health::v1::Health::Stub& health;
  std::ostream& out;
  std::ostream& err;

  const GlobalOptions& options() const { return invocation.global; }
  bool json() const { return invocation.global.json; }
};

using CommandHandler = int (*)(CommandContext& context);

// The handler of a command name ("snapshot create"); null for "help".
CommandHandler FindHandler(const std::string& name);

// Prints a usage error of the current command and returns kExitUsage.
int UsageError(CommandContext& context, const absl::Status& error);

// Runs one unary call (`call(grpc::ClientContext*)` returns its grpc::Status) with the unary
// deadline. Returns kExitOk, or reports the error and returns kExitRpcError.
template <typename Call>
int RunUnary(CommandContext& context, const std::string& rpc, Call&& call) {
  grpc::ClientContext client_context;
  SetDeadline(&client_context, context.options(), /*streaming=*/false);
  const grpc::Status status = call(&client_context);
  if (!status.ok()) return ReportRpcError(rpc, status, client_context, context.err);
  return kExitOk;
}

// Prints `reply` as one JSON line, or calls `human()` without --json.
template <typename Message, typename Human>
int PrintReply(CommandContext& context, const Message& reply, Human&& human) {
  if (context.json()) {
    context.out << ToJson(reply) << "\n";
  } else {
    human();
  }
  return kExitOk;
}

// Handlers, by file.
int RunCapabilities(CommandContext& context);  // commands_node.cc
int RunEcho(CommandContext& context);
int RunHealth(CommandContext& context);
int RunAttach(CommandContext& context);  // commands_trackers.cc
int RunDetach(CommandContext& context);
int RunTracker(CommandContext& context);
int RunTrackers(CommandContext& context);
int RunSnapshotCreate(CommandContext& context);  // commands_snapshots.cc
int RunSnapshotRelease(CommandContext& context);
int RunSnapshotGet(CommandContext& context);
int RunSnapshots(CommandContext& context);
int RunWatch(CommandContext& context);
int RunCbtInfo(CommandContext& context);  // commands_cbt.cc
int RunCbtDirty(CommandContext& context);
int RunCbtMap(CommandContext& context);  // commands_cbt_map.cc
int RunCbtExtents(CommandContext& context);  // commands_cbt_extents.cc

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_COMMANDS_H_
