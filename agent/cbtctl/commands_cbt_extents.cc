// cbt extents: streams the changed extents since a base backup, with totals.
#include <optional>

#include "absl/strings/str_cat.h"
#include "cbtctl/commands.h"
#include "cbtctl/interrupt.h"
#include "cbtctl/progress.h"
#include "cbtctl/requests.h"
#include "cbtctl/sizes.h"
#include "cbtctl/summaries.h"

namespace cbt::cbtctl {
namespace {

constexpr char kRpc[] = "GetChangedExtents";

// The device capacity for the percentage and the progress; unknown when the call fails (the
// extents call then reports the real problem).
std::optional<uint64_t> FetchCapacity(CommandContext& context, const std::string& device) {
  v1::GetCbtInfoRequest request;
  request.set_device(device);
  v1::CbtInfo info;
  grpc::ClientContext call;
  SetDeadline(&call, context.options(), /*streaming=*/false);
  if (!context.agent.GetCbtInfo(&call, request, &info).ok() || info.capacity_bytes() == 0) {
    return std::nullopt;
  }
  return info.capacity_bytes();
}

std::string ProgressText(const ExtentsTotals& totals, std::optional<uint64_t> capacity) {
  std::string text = absl::StrCat(kRpc, ": ", totals.extents(), " extents, ",
                                  HumanSize(totals.changed_bytes()), " changed");
  if (capacity) absl::StrAppend(&text, ", ", Percent(totals.scanned_to(), *capacity), " scanned");
  return text;
}

}  // namespace

int RunCbtExtents(CommandContext& context) {
  auto request = BuildChangedExtentsRequest(context.invocation);
  if (!request.ok()) return UsageError(context, request.status());

  InterruptCanceller canceller;
  std::optional<uint64_t> capacity;
  if (!context.json()) capacity = FetchCapacity(context, request->device());
  Progress progress(!context.json() && Progress::StderrIsTty());
  // Extent lines and the progress line share the terminal only when stdout is one too.
  const bool shared_terminal = Progress::StdoutIsTty();
  grpc::ClientContext call;
  SetDeadline(&call, context.options(), /*streaming=*/true);
  canceller.Watch(&call);
  auto reader = context.agent.GetChangedExtents(&call, *request);
  ExtentsTotals totals;
  v1::ChangedExtentsChunk chunk;
  while (reader->Read(&chunk)) {
    if (!context.out) {  // stdout closed (e.g. piped into head)
      call.TryCancel();
      (void)reader->Finish();
      return kExitLocalError;
    }
    totals.Add(chunk);
    if (context.json()) {
      context.out << ToJson(chunk) << "\n";
      continue;
    }
    if (!chunk.extents().empty()) {
      if (shared_terminal) progress.Clear();
      if (totals.extents() == static_cast<uint64_t>(chunk.extents_size())) {
        context.out << ExtentHeader() << "\n";
      }
      for (const v1::Extent& extent : chunk.extents()) {
        context.out << FormatExtentLine(extent.offset(), extent.length()) << "\n";
      }
      context.out.flush();
    }
    progress.Show(ProgressText(totals, capacity), /*force=*/shared_terminal);
  }
  const grpc::Status status = reader->Finish();
  canceller.Watch(nullptr);
  progress.Clear();
  if (canceller.interrupted()) {
    context.err << "cbtctl: " << kRpc << ": interrupted" << std::endl;
    return kExitInterrupted;
  }
  if (!status.ok()) return ReportRpcError(kRpc, status, call, context.err);
  if (context.json()) return kExitOk;
  if (totals.extents() > 0) context.out << "\n";
  totals.Summary(capacity).Write(context.out);
  return kExitOk;
}

}  // namespace cbt::cbtctl
