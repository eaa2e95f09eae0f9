// attach, detach, tracker, trackers.
#include "cbtctl/commands.h"
#include "cbtctl/human_output.h"
#include "cbtctl/requests.h"

namespace cbt::cbtctl {

int RunAttach(CommandContext& context) {
  auto device = DeviceArgument(context.invocation);
  if (!device.ok()) return UsageError(context, device.status());
  v1::AttachTrackerRequest request;
  request.set_device(*device);
  v1::AttachTrackerResponse reply;
  if (int rc = RunUnary(context, "AttachTracker", [&](grpc::ClientContext* call) {
        return context.agent.AttachTracker(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] {
    Fields fields = TrackerFields(reply.tracker());
    fields.Add("already attached", YesNo(reply.already_attached()));
    fields.Write(context.out);
  });
}

int RunDetach(CommandContext& context) {
  auto device = DeviceArgument(context.invocation);
  if (!device.ok()) return UsageError(context, device.status());
  v1::DetachTrackerRequest request;
  request.set_device(*device);
  v1::DetachTrackerResponse reply;
  if (int rc = RunUnary(context, "DetachTracker", [&](grpc::ClientContext* call) {
        return context.agent.DetachTracker(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] {
    Fields()
        .Add("detached", *device)
        .Add("note", "its CBT is discarded; the next backup must be a full one")
        .Write(context.out);
  });
}

int RunTracker(CommandContext& context) {
  auto device = DeviceArgument(context.invocation);
  if (!device.ok()) return UsageError(context, device.status());
  v1::GetTrackerRequest request;
  request.set_device(*device);
  v1::Tracker reply;
  if (int rc = RunUnary(context, "GetTracker", [&](grpc::ClientContext* call) {
        return context.agent.GetTracker(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] { TrackerFields(reply).Write(context.out); });
}

int RunTrackers(CommandContext& context) {
  v1::ListTrackersRequest request;
  v1::ListTrackersResponse reply;
  if (int rc = RunUnary(context, "ListTrackers", [&](grpc::ClientContext* call) {
        return context.agent.ListTrackers(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] { WriteTrackerTable(reply, context.out); });
}

}  // namespace cbt::cbtctl
