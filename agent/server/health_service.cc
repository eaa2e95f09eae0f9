#include "server/health_service.h"

#include <chrono>

namespace cbt::agent {

using grpc::health::v1::HealthCheckResponse;

void HealthState::Set(const std::string& service, Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) return;
  statuses_[service] = status;
  cv_.notify_all();
}

HealthState::Status HealthState::Get(const std::string& service) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = statuses_.find(service);
  return it == statuses_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
}

HealthState::Status HealthState::WaitForChange(const std::string& service, Status seen,
                                               int timeout_ms) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto current = [&] {
    auto it = statuses_.find(service);
    return it == statuses_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
  };
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
               [&] { return shut_down_ || current() != seen; });
  return current();
}

void HealthState::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, status] : statuses_) status = HealthCheckResponse::NOT_SERVING;
  shut_down_ = true;
  cv_.notify_all();
}

bool HealthState::shut_down() const {
  std::lock_guard<std::mutex> lock(mu_);
  return shut_down_;
}

grpc::Status HealthService::Check(grpc::ServerContext*,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  HealthCheckResponse* response) {
  const auto status = state_->Get(request->service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    return {grpc::StatusCode::NOT_FOUND, "unknown service '" + request->service() + "'"};
  }
  response->set_status(status);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(grpc::ServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::ServerWriter<HealthCheckResponse>* writer) {
  auto status = state_->Get(request->service());
  HealthCheckResponse response;
  response.set_status(status);
  if (!writer->Write(response)) return grpc::Status::OK;
  while (!context->IsCancelled() && !state_->shut_down()) {
    const auto next = state_->WaitForChange(request->service(), status, 200);
    if (next == status) continue;
    status = next;
    response.set_status(status);
    if (!writer->Write(response)) break;
  }
  if (state_->shut_down()) {
    response.set_status(HealthCheckResponse::NOT_SERVING);
    writer->Write(response);
  }
  return grpc::Status::OK;
}

}  // namespace cbt::agent
