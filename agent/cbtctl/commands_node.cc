// capabilities, echo, health.
#include <chrono>
#include <cstdio>

#include "cbtctl/commands.h"
#include "cbtctl/human_output.h"
#include "cbtctl/requests.h"

namespace cbt::cbtctl {

int RunCapabilities(CommandContext& context) {
  v1::GetCapabilitiesRequest request;
  v1::Capabilities reply;
  if (int rc = RunUnary(context, "GetCapabilities", [&](grpc::ClientContext* call) {
        return context.agent.GetCapabilities(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  return PrintReply(context, reply, [&] { CapabilitiesFields(reply).Write(context.out); });
}

int RunEcho(CommandContext& context) {
  const v1::EchoRequest request = BuildEchoRequest(context.invocation);
  v1::EchoResponse reply;
  const auto start = std::chrono::steady_clock::now();
  if (int rc = RunUnary(context, "Echo", [&](grpc::ClientContext* call) {
        return context.agent.Echo(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  const std::chrono::duration<double, std::milli> elapsed =
      std::chrono::steady_clock::now() - start;
  return PrintReply(context, reply, [&] {
    char round_trip[32];
    std::snprintf(round_trip, sizeof(round_trip), "%.3f ms", elapsed.count());
    Fields()
        .Add("payload", reply.payload())
        .Add("bytes", std::to_string(reply.payload().size()))
        .Add("round trip", round_trip)
        .Write(context.out);
  });
}

int RunHealth(CommandContext& context) {
  const auto request = BuildHealthRequest(context.invocation);
  grpc::health::v1::HealthCheckResponse reply;
  if (int rc = RunUnary(context, "Check", [&](grpc::ClientContext* call) {
        return context.health.Check(call, request, &reply);
      });
      rc != kExitOk) {
    return rc;
  }
  PrintReply(context, reply, [&] {
    Fields()
        .Add("service", request.service().empty() ? "(server)" : request.service())
        .Add("status", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(reply.status()))
        .Write(context.out);
  });
  return reply.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk
                                                                           : kExitNotServing;
}

}  // namespace cbt::cbtctl
