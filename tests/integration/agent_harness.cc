#include "agent_harness.h"

#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <thread>

namespace cbt::testing {

AgentHarness::AgentHarness(std::string flavour, std::string kernel_release,
                           std::vector<EmulatedDevice> devices)
    : flavour_(std::move(flavour)),
      kernel_release_(std::move(kernel_release)),
      devices_(std::move(devices)),
      work_dir_(MakeTempDir("cbt-integration")) {
  ::mkdir((work_dir_ + "/backing").c_str(), 0700);
  ::mkdir(diff_dir().c_str(), 0700);
}

AgentHarness::~AgentHarness() {
  stub_.reset();
  channel_.reset();
  agent_.Stop(SIGKILL, 5000);
  kernel_.reset();
  emulator_.Stop(SIGKILL, 5000);
  RemoveTree(work_dir_);
}

bool AgentHarness::StartEmulator() {
  std::vector<std::string> argv = {BLKSNAP_EMULATOR_BINARY,
                                   "--socket=" + kernel_socket(),
                                   "--flavour=" + flavour_,
                                   "--kernel_release=" + kernel_release_,
                                   "--backing_dir=" + work_dir_ + "/backing"};
  for (const EmulatedDevice& d : devices_) {
    argv.push_back("--device=" + d.path + ":" + std::to_string(d.size_bytes) + ":" +
                   std::to_string(d.major) + ":" + std::to_string(d.minor));
  }
  if (!emulator_.Start(argv, work_dir_ + "/emulator.log")) return false;
  // The emulator's socket is SOCK_SEQPACKET, so readiness is a successful client connect.
  for (int attempt = 0; attempt < 500; ++attempt) {
    auto client = blksnap::emulator::EmulatorClient::Connect(kernel_socket());
    if (client.ok()) {
      kernel_.emplace(std::move(*client));
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

bool AgentHarness::LaunchAgent(const std::vector<std::string>& args) {
  // Diff storage lives in the work directory, outside the default allowlist (<state_dir>/diff).
  std::vector<std::string> argv = {
      CBT_AGENT_BINARY, "--state_dir=" + state_dir(), "--backend=blksnap",
      "--blksnap_emulator_socket=" + kernel_socket(), "--diff_storage_allow=" + diff_dir()};
  argv.insert(argv.end(), args.begin(), args.end());
  return agent_.Start(argv, work_dir_ + "/agent.log");
}

bool AgentHarness::StartAgent(const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = {"--listen=unix:" + agent_socket()};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  if (!LaunchAgent(args)) return false;
  return Connect();
}

bool AgentHarness::StartHostAgent(const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv = {CBT_AGENT_BINARY, "--state_dir=" + state_dir(), "--backend=auto",
                                   "--listen=unix:" + agent_socket(),
                                   "--diff_storage_allow=" + diff_dir()};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  if (!agent_.Start(argv, work_dir_ + "/agent.log")) return false;
  return Connect();
}

bool AgentHarness::Connect() {
  if (!WaitForUnixSocket(agent_socket(), 15000)) return false;
  channel_ = grpc::CreateChannel("unix:" + agent_socket(), grpc::InsecureChannelCredentials());
  stub_ = cbtagent::v1::CbtAgent::NewStub(channel_);
  return channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10));
}

int AgentHarness::StopAgent(int signal, int timeout_ms) {
  stub_.reset();
  channel_.reset();
  return agent_.Stop(signal, timeout_ms);
}

std::unique_ptr<grpc::ClientContext> Deadline(int seconds) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return context;
}

}  // namespace cbt::testing
