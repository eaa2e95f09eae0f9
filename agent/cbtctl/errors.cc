#include "cbtctl/errors.h"

#include "absl/strings/str_cat.h"

namespace cbt::cbtctl {

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    default: return absl::StrCat("CODE_", static_cast<int>(code));
  }
}

std::string FormatUsageError(const absl::Status& error, const Invocation& invocation) {
  std::string text = absl::StrCat("cbtctl: ", std::string(error.message()), "\n");
  if (invocation.command != nullptr) {
    absl::StrAppend(&text, "Usage: ", UsageLine(*invocation.command), "\nRun 'cbtctl ",
                    invocation.command->name, " --help' for details.\n");
  } else if (!invocation.group.empty()) {
    absl::StrAppend(&text, GroupHelp(invocation.group));
  } else {
    absl::StrAppend(&text, "Run 'cbtctl --help' for the list of commands.\n");
  }
  return text;
}

std::string FormatRpcError(const std::string& rpc, const grpc::Status& status,
                           bool full_backup_required) {
  std::string text = absl::StrCat("cbtctl: ", rpc, ": ", StatusCodeName(status.error_code()),
                                  ": ", status.error_message(), "\n");
  if (full_backup_required) {
    text += "full backup required: the CBT generation changed since the base backup\n";
  }
  return text;
}

bool FullBackupRequired(const grpc::ClientContext& context) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto [begin, end] = trailers.equal_range(kFullBackupRequiredKey);
  for (auto it = begin; it != end; ++it) {
    if (std::string(it->second.data(), it->second.size()) == "true") return true;
  }
  return false;
}

int ReportRpcError(const std::string& rpc, const grpc::Status& status,
                   const grpc::ClientContext& context, std::ostream& err) {
  err << FormatRpcError(rpc, status, FullBackupRequired(context)) << std::flush;
  return kExitRpcError;
}

}  // namespace cbt::cbtctl
