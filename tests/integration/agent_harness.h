// AgentHarness: a blksnap emulator process (the "kernel") plus the real cbt-agent daemon talking
// to it, and a gRPC client of the daemon. The emulator outlives agent restarts, like a kernel.
#ifndef CBT_TESTS_INTEGRATION_AGENT_HARNESS_H_
#define CBT_TESTS_INTEGRATION_AGENT_HARNESS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cbtagent/v1/agent.grpc.pb.h"
#include "emulator_client.h"
#include "process.h"

namespace cbt::testing {

struct EmulatedDevice {
  std::string path;
  uint64_t size_bytes;
  uint32_t major;
  uint32_t minor;
};

class AgentHarness {
 public:
  AgentHarness(std::string flavour, std::string kernel_release,
               std::vector<EmulatedDevice> devices);
  ~AgentHarness();

  bool StartEmulator();
  // Starts the daemon on a Unix socket in the work directory (plus `extra_args`) and connects.
  bool StartAgent(const std::vector<std::string>& extra_args = {});
  // Starts the daemon without waiting for its socket (for tests that expect it to refuse).
  // Besides `args` it gets the state dir, the emulator and --diff_storage_allow=diff_dir().
  bool LaunchAgent(const std::vector<std::string>& args);
  // Starts the daemon WITHOUT the emulator (--backend=auto on the host, which has no blksnap
  // module: every backend call fails), on the Unix socket plus `extra_args`, and connects. For
  // checks that must see the host's real file system (its /dev), never reaching a backend.
  bool StartHostAgent(const std::vector<std::string>& extra_args = {});
  int StopAgent(int signal, int timeout_ms = 15000);

  cbtagent::v1::CbtAgent::Stub& agent() { return *stub_; }
  blksnap::emulator::EmulatorClient& kernel() { return *kernel_; }
  ChildProcess& agent_process() { return agent_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

  const std::string& work_dir() const { return work_dir_; }
  std::string agent_socket() const { return work_dir_ + "/agent.sock"; }
  std::string kernel_socket() const { return work_dir_ + "/kernel.sock"; }
  std::string state_dir() const { return work_dir_ + "/state"; }
  std::string diff_dir() const { return work_dir_ + "/diff"; }
  std::string AgentLog() const { return agent_.Log(); }
  // The part of the agent's log written after it was `offset` bytes long.
  std::string AgentLogSince(size_t offset) const {
    const std::string log = agent_.Log();
    return offset < log.size() ? log.substr(offset) : "";
  }

 private:
  std::string flavour_;
  std::string kernel_release_;
  std::vector<EmulatedDevice> devices_;
  std::string work_dir_;
  ChildProcess emulator_;
  ChildProcess agent_;
  std::optional<blksnap::emulator::EmulatorClient> kernel_;
  std::shared_ptr<grpc::Channel> channel_;
  bool Connect();

  std::unique_ptr<cbtagent::v1::CbtAgent::Stub> stub_;
};

// Drains a server stream into a vector; returns the final status.
template <typename Message, typename Reader>
grpc::Status ReadAll(Reader& reader, std::vector<Message>* out) {
  Message message;
  while (reader->Read(&message)) out->push_back(message);
  return reader->Finish();
}

// A ClientContext with a deadline `seconds` ahead.
std::unique_ptr<grpc::ClientContext> Deadline(int seconds = 30);

}  // namespace cbt::testing

#endif  // CBT_TESTS_INTEGRATION_AGENT_HARNESS_H_
