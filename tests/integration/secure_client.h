// A client of the agent with its own channel and credentials (authorization metadata), and
// status-returning calls, for the security tests.
#ifndef CBT_TESTS_INTEGRATION_SECURE_CLIENT_H_
#define CBT_TESTS_INTEGRATION_SECURE_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cbtagent/v1/agent.grpc.pb.h"

namespace cbt::testing {

namespace v1 = ::cbtagent::v1;

class Caller {
 public:
  Caller(std::shared_ptr<grpc::Channel> channel,
         std::vector<std::pair<std::string, std::string>> metadata = {})
      : channel_(std::move(channel)),
        metadata_(std::move(metadata)),
        stub_(v1::CbtAgent::NewStub(channel_)) {}
  // With "authorization: Bearer <token>".
  static Caller Bearer(std::shared_ptr<grpc::Channel> channel, const std::string& token) {
    return Caller(std::move(channel), {{"authorization", "Bearer " + token}});
  }

  // A context with the metadata and a deadline `seconds` ahead.
  std::unique_ptr<grpc::ClientContext> Context(int seconds = 10) const;
  v1::CbtAgent::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

  grpc::Status Echo(const std::string& payload);
  grpc::Status ListTrackers();
  grpc::Status Attach(const std::string& device);
  grpc::Status Detach(const std::string& device);
  grpc::Status GetCbtInfo(const std::string& device);
  grpc::Status ReadMap(const std::string& device);
  grpc::Status Extents(const std::string& device, const std::string& generation);
  // `count` ranges of 512 bytes at offset 0.
  grpc::Status MarkDirty(const std::string& device, int count);
  grpc::Status Create(const std::vector<std::string>& devices, const std::string& diff_storage,
                      std::string* id = nullptr);
  grpc::Status Release(const std::string& id);

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::unique_ptr<v1::CbtAgent::Stub> stub_;
};

}  // namespace cbt::testing

#endif  // CBT_TESTS_INTEGRATION_SECURE_CLIENT_H_
