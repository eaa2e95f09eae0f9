#include "server/call_scope.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/denial_log.h"
#include "server/status_mapping.h"

namespace cbt::agent {
namespace {

// The metrics label of a gRPC code: absl's name for the same number (the two enums share their
// numbering), as the denial log writes it.
std::string CodeName(grpc::StatusCode code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? "UNKNOWN" : name;
}

}  // namespace

CallScope::CallScope(const Safeguards& guards, Metrics* metrics, grpc::ServerContext* context,
                     const char* method, const google::protobuf::MessageLite& request)
    : guards_(guards),
      metrics_(metrics),
      context_(context),
      method_(method),
      request_(request),
      start_(absl::Now()) {}

absl::Status CallScope::Admit() {
  if (guards_.authorizer != nullptr) {
    AuthzDecision decision =
        guards_.authorizer->Decide(CredentialsOf(*context_), method_, absl::Now());
    caller_ = std::move(decision.caller);
    if (!decision.status.ok()) return Refuse(std::move(decision.status));
  }
  if (guards_.max_request_bytes != 0) {
    const size_t size = request_.ByteSizeLong();
    if (size > guards_.max_request_bytes) {
      return Refuse(absl::ResourceExhaustedError(
          absl::StrCat("the request has ", size, " bytes; --max_receive_message_bytes is ",
                       guards_.max_request_bytes)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GuardedDevice> CallScope::CheckDevice(const std::string& device) {
  if (guards_.paths == nullptr) return GuardedDevice{device, "", 0, 0};
  auto checked = guards_.paths->CheckDevice(device);
  // A missing device is an ordinary mistake, not a refusal worth a warning.
  if (!checked.ok() && checked.status().code() != absl::StatusCode::kNotFound) {
    return Refuse(checked.status());
  }
  return checked;
}

absl::Status CallScope::CheckDiffStorage(const std::string& path,
                                         const std::vector<GuardedDevice>& snapshot_devices) {
  if (guards_.paths == nullptr) return absl::OkStatus();
  absl::Status status = guards_.paths->CheckDiffStorage(path, snapshot_devices);
  if (!status.ok() && status.code() != absl::StatusCode::kNotFound) return Refuse(status);
  return status;
}

absl::StatusOr<std::unique_ptr<StreamLimiter::Ticket>> CallScope::AdmitStream() {
  if (guards_.streams == nullptr) return std::unique_ptr<StreamLimiter::Ticket>();
  grpc::ServerContext* context = context_;
  auto ticket = guards_.streams->Admit([context] { context->TryCancel(); });
  if (!ticket.ok()) return Refuse(ticket.status());
  return ticket;
}

absl::Status CallScope::StreamTimeUp(const std::string& resume) {
  return Refuse(absl::DeadlineExceededError(
      absl::StrCat("the stream ran for --max_stream_duration=",
                   absl::FormatDuration(guards_.streams->max_duration()), "; ", resume)));
}

absl::Status CallScope::Refuse(absl::Status status) {
  LogDenial(method_, context_->peer(), caller_.empty() ? "-" : caller_, status);
  return status;
}

grpc::Status CallScope::Done(const absl::Status& status) {
  return Done(ToGrpcStatus(status, context_));
}

grpc::Status CallScope::Done(grpc::Status status) {
  if (metrics_ != nullptr) {
    metrics_->RecordRpc(method_, CodeName(status.error_code()),
                        absl::ToDoubleSeconds(absl::Now() - start_));
  }
  return status;
}

}  // namespace cbt::agent
