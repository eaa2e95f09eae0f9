// cbt map: streams the CBT read map into a file and/or a change-number histogram.
#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "cbtctl/commands.h"
#include "cbtctl/interrupt.h"
#include "cbtctl/progress.h"
#include "cbtctl/requests.h"
#include "cbtctl/sizes.h"
#include "cbtctl/summaries.h"

namespace cbt::cbtctl {
namespace {

constexpr char kRpc[] = "ReadCbtMap";

int LocalError(CommandContext& context, const std::string& message) {
  context.err << "cbtctl: " << message << std::endl;
  return kExitLocalError;
}

}  // namespace

int RunCbtMap(CommandContext& context) {
  auto args = BuildMapArgs(context.invocation);
  if (!args.ok()) return UsageError(context, args.status());
  std::ofstream file;
  if (!args->output.empty()) {
    file.open(args->output, std::ios::binary | std::ios::trunc);
    if (!file) return LocalError(context, args->output + ": " + std::strerror(errno));
  }

  InterruptCanceller canceller;
  Progress progress(!context.json() && Progress::StderrIsTty());
  grpc::ClientContext call;
  SetDeadline(&call, context.options(), /*streaming=*/true);
  canceller.Watch(&call);
  auto reader = context.agent.ReadCbtMap(&call, args->request);
  MapHistogram histogram;
  uint64_t total = 0;
  std::string protocol_error;
  v1::CbtMapChunk chunk;
  while (reader->Read(&chunk)) {
    const uint64_t expected = args->request.offset() + histogram.blocks();
    if (chunk.offset() != expected) {
      protocol_error = absl::StrCat("chunk at map offset ", chunk.offset(), ", expected ",
                                    expected);
      call.TryCancel();
      break;
    }
    if (file.is_open() && !file.write(chunk.data().data(),
                                      static_cast<std::streamsize>(chunk.data().size()))) {
      call.TryCancel();
      (void)reader->Finish();
      progress.Clear();
      return LocalError(context, args->output + ": write failed: " + std::strerror(errno));
    }
    histogram.Add(chunk.data());
    total = chunk.total_length();
    if (context.json() && !(context.out << ToJson(chunk) << "\n")) {
      call.TryCancel();
      (void)reader->Finish();
      return kExitLocalError;  // stdout closed
    }
    progress.Show(absl::StrCat(kRpc, ": ", HumanSize(histogram.blocks()), " of ",
                               HumanSize(total), " map bytes (",
                               Percent(histogram.blocks(), total), ")"));
  }
  const grpc::Status status = reader->Finish();
  canceller.Watch(nullptr);
  progress.Clear();
  if (!protocol_error.empty()) {
    context.err << "cbtctl: " << kRpc << ": protocol error: " << protocol_error << std::endl;
    return kExitRpcError;
  }
  if (canceller.interrupted()) {
    context.err << "cbtctl: " << kRpc << ": interrupted" << std::endl;
    return kExitInterrupted;
  }
  if (!status.ok()) return ReportRpcError(kRpc, status, call, context.err);
  if (file.is_open() && !file.flush()) {
    return LocalError(context, args->output + ": write failed: " + std::strerror(errno));
  }
  if (context.json()) return kExitOk;

  Fields fields;
  fields.Add("device", args->request.device())
      .Add("map offset", absl::StrCat(args->request.offset()))
      .Add("blocks", absl::StrCat(histogram.blocks()));
  if (file.is_open()) {
    fields.Add("output", absl::StrCat(args->output, " (", histogram.blocks(), " bytes)"));
  }
  fields.Add("change numbers", "");
  fields.Write(context.out);
  histogram.Write(context.out, 2);
  return kExitOk;
}

}  // namespace cbt::cbtctl
