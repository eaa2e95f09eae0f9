// snapshot create/release/get, snapshots, watch.
#include "cbtctl/commands.h"
#include "cbtctl/human_output.h"
#include "cbtctl/interrupt.h"
#include "cbtctl/requests.h"

namespace cbt::cbtctl {

int RunSnapshotCreate(CommandContext& context) {
  auto request = BuildCreateSnapshotRequest(context.invocation);
  if (!request.ok()) return UsageError(context, request.status());
  v1::CreateSnapshotResponse reply;
  if (int rc = RunUnary(context, "CreateSnapshot", [&](grpc::ClientContext* call) {
        return context.agent.CreateSnapshot(call, *request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] { WriteSnapshot(reply.snapshot(), context.out); });
}

int RunSnapshotRelease(CommandContext& context) {
  auto id = SnapshotIdArgument(context.invocation);
  if (!id.ok()) return UsageError(context, id.status());
  v1::ReleaseSnapshotRequest request;
  request.set_snapshot_id(*id);
  v1::ReleaseSnapshotResponse reply;
  if (int rc = RunUnary(context, "ReleaseSnapshot", [&](grpc::ClientContext* call) {
        return context.agent.ReleaseSnapshot(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] { Fields().Add("released", *id).Write(context.out); });
}

int RunSnapshotGet(CommandContext& context) {
  auto id = SnapshotIdArgument(context.invocation);
  if (!id.ok()) return UsageError(context, id.status());
  v1::GetSnapshotRequest request;
  request.set_snapshot_id(*id);
  v1::Snapshot reply;
  if (int rc = RunUnary(context, "GetSnapshot", [&](grpc::ClientContext* call) {
        return context.agent.GetSnapshot(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] { WriteSnapshot(reply, context.out); });
}

int RunSnapshots(CommandContext& context) {
  v1::ListSnapshotsRequest request;
  v1::ListSnapshotsResponse reply;
  if (int rc = RunUnary(context, "ListSnapshots", [&](grpc::ClientContext* call) {
        return context.agent.ListSnapshots(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] {
    if (reply.snapshots().empty()) context.out << "no snapshots\n";
    for (int i = 0; i < reply.snapshots_size(); ++i) {
      if (i > 0) context.out << "\n";
      WriteSnapshot(reply.snapshots(i), context.out);
    }
  });
}

int RunWatch(CommandContext& context) {
  const v1::WatchSnapshotEventsRequest request = BuildWatchRequest(context.invocation);
  InterruptCanceller canceller;
  grpc::ClientContext call;
  SetDeadline(&call, context.options(), /*streaming=*/true);
  canceller.Watch(&call);
  auto reader = context.agent.WatchSnapshotEvents(&call, request);
  v1::SnapshotEvent event;
  bool output_failed = false;
  while (reader->Read(&event)) {
    context.out << (context.json() ? ToJson(event) : FormatEvent(event)) << std::endl;
    if (!context.out) {  // e.g. "cbtctl watch | head -1" after head exited
      output_failed = true;
      call.TryCancel();
      break;
    }
  }
  const grpc::Status status = reader->Finish();
  canceller.Watch(nullptr);
  if (output_failed) return kExitLocalError;
  // Ctrl-C is the normal way to stop watching.
  if (canceller.interrupted() && status.error_code() == grpc::StatusCode::CANCELLED) {
    return kExitOk;
  }
  if (!status.ok()) return ReportRpcError("WatchSnapshotEvents", status, call, context.err);
  return kExitOk;
}

}  // namespace cbt::cbtctl
