// cbt info, cbt dirty.
#include "cbtctl/commands.h"
#include "cbtctl/human_output.h"
#include "cbtctl/requests.h"
#include "cbtctl/sizes.h"

namespace cbt::cbtctl {

int RunCbtInfo(CommandContext& context) {
  auto device = DeviceArgument(context.invocation);
  if (!device.ok()) return UsageError(context, device.status());
  v1::GetCbtInfoRequest request;
  request.set_device(*device);
  v1::CbtInfo reply;
  if (int rc = RunUnary(context, "GetCbtInfo", [&](grpc::ClientContext* call) {
        return context.agent.GetCbtInfo(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] { CbtInfoFields(reply).Write(context.out); });
}

int RunCbtDirty(CommandContext& context) {
  auto request = BuildMarkDirtyRequest(context.invocation);
  if (!request.ok()) return UsageError(context, request.status());
  v1::MarkDirtyResponse reply;
  if (int rc = RunUnary(context, "MarkDirty", [&](grpc::ClientContext* call) {
        return context.agent.MarkDirty(call, *request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] {
    Fields()
        .Add("device", request->device())
        .Add("ranges", std::to_string(request->ranges_size()))
        .Add("marked", FormatSize(reply.marked_bytes()))
        .Write(context.out);
  });
}

}  // namespace cbt::cbtctl
