// grpc.health.v1.Health, implemented over our own compiled health.proto so that reflection
// clients can describe and call it.
//
// HealthState holds the serving status per service name and is shared by the service
// instances of every server (the API server and the health-only TCP listener).
#ifndef CBT_AGENT_SERVER_HEALTH_SERVICE_H_
#define CBT_AGENT_SERVER_HEALTH_SERVICE_H_

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"

namespace cbt::agent {

class HealthState {
 public:
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;

  void Set(const std::string& service, Status status);
  // SERVICE_UNKNOWN for names never set.
  Status Get(const std::string& service) const;
  // Blocks until the status of `service` differs from `seen`, `timeout_ms` passes, or shutdown.
  Status WaitForChange(const std::string& service, Status seen, int timeout_ms) const;
  // Every service NOT_SERVING; wakes watchers so streams can end.
  void Shutdown();
  bool shut_down() const;

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<std::string, Status> statuses_;
  bool shut_down_ = false;
};

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  explicit HealthService(HealthState* state) : state_(state) {}

  grpc::Status Check(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override;

 private:
  HealthState* state_;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_HEALTH_SERVICE_H_
