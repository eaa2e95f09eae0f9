// How the daemon is reached: TCP only with TLS (or an explicit insecure flag), mutual TLS,
// socket permissions, the health-only listener, and the metrics endpoint.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "api_calls.h"
#include "credentials.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace cbt::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
const char kDev[] = "/dev/emu-a";
const char kToken[] = "0123456789abcdef0123456789abcdef";

class TransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    harness_ = std::make_unique<AgentHarness>(
        "lk6.15", "6.15.0", std::vector<EmulatedDevice>{{kDev, 64 * kMiB, 8, 16}});
    ASSERT_TRUE(harness_->StartEmulator());
  }
  // A CA, a server certificate for 127.0.0.1/localhost and a client certificate (CN
  // backup-controller), made with openssl in the work directory.
  void MakeCertificates() {
    certificates_ = std::make_unique<TestCertificates>(harness_->work_dir());
    ASSERT_TRUE(certificates_->MakeAuthority("ca") && certificates_->MakeServer() &&
                certificates_->MakeClient("client", "backup-controller"))
        << certificates_->OpensslLog();
  }
  std::unique_ptr<AgentHarness> harness_;
  std::unique_ptr<TestCertificates> certificates_;
};

// Echo, with a bearer token when `token` is not empty.
grpc::Status Ping(std::shared_ptr<grpc::Channel> channel, const std::string& token = "") {
  auto stub = v1::CbtAgent::NewStub(channel);
  v1::EchoRequest request;
  request.set_payload("ping");
  v1::EchoResponse response;
  auto context = Deadline(10);
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  grpc::Status status = stub->Echo(context.get(), request, &response);
  if (status.ok() && response.payload() != "ping") {
    return grpc::Status(grpc::StatusCode::INTERNAL, "echo changed the payload");
  }
  return status;
}

TEST_F(TransportTest, UnixSocketHasMode0660ByDefault) {
  ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();
  struct stat st;
  ASSERT_EQ(::stat(harness_->agent_socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_TRUE(Ping(harness_->channel()).ok());
}

TEST_F(TransportTest, TcpWithoutTlsIsRefusedUnlessExplicitlyAllowed) {
  const int port = PickFreePort();
  ASSERT_TRUE(harness_->LaunchAgent({"--listen=127.0.0.1:" + std::to_string(port)}));
  int status = -1;
  for (int i = 0; i < 100 && status == -1; ++i) {
    status = harness_->agent_process().ExitedStatus();
    if (status == -1) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_NE(status, -1) << "the agent must refuse to start";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  EXPECT_NE(harness_->AgentLog().find("without TLS"), std::string::npos) << harness_->AgentLog();

  // Allowed, the listener still lets only granted callers in: here a bearer token.
  const std::string tokens = harness_->work_dir() + "/tokens";
  ASSERT_TRUE(WriteFileWithMode(tokens, std::string(kToken) + " prober read\n", 0600));
  ASSERT_TRUE(harness_->LaunchAgent({"--listen=127.0.0.1:" + std::to_string(port),
                                     "--allow_insecure_tcp", "--auth_tokens_file=" + tokens}));
  ASSERT_TRUE(WaitForTcpPort(port, 10000)) << harness_->AgentLog();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials());
  EXPECT_EQ(Ping(channel).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Ping(channel, kToken).ok()) << harness_->AgentLog();
}

TEST_F(TransportTest, MutualTlsAcceptsOnlyClientsWithACertificate) {
  MakeCertificates();
  const std::string policy = harness_->work_dir() + "/policy";
  ASSERT_TRUE(WriteFileWithMode(policy, "grant read cert-cn:backup-controller\n", 0644));
  const int port = PickFreePort();
  std::vector<std::string> flags = certificates_->ServerFlags();
  flags.push_back("--listen=127.0.0.1:" + std::to_string(port));
  flags.push_back("--authz_policy=" + policy);
  ASSERT_TRUE(harness_->StartAgent(flags)) << harness_->AgentLog();
  ASSERT_TRUE(WaitForTcpPort(port, 10000));
  const std::string target = "localhost:" + std::to_string(port);

  EXPECT_TRUE(Ping(certificates_->Channel(target, "client")).ok()) << harness_->AgentLog();
  // Without a tokens file the certificate is required at the handshake itself.
  EXPECT_EQ(Ping(certificates_->Channel(target)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(
      Ping(grpc::CreateChannel(target, grpc::InsecureChannelCredentials())).ok());
}

TEST_F(TransportTest, HealthListenerServesOnlyHealth) {
  const int port = PickFreePort();
  ASSERT_TRUE(harness_->StartAgent({"--health_listen=127.0.0.1:" + std::to_string(port)}))
      << harness_->AgentLog();
  ASSERT_TRUE(WaitForTcpPort(port, 10000));
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  for (const std::string service : {"", "cbtagent.v1.CbtAgent"}) {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(Deadline(10).get(), request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  EXPECT_EQ(Ping(channel).error_code(), grpc::StatusCode::UNIMPLEMENTED)
      << "the API must not be reachable through the health listener";
}

TEST_F(TransportTest, MetricsCountCallsAndReportTrackers) {
  const int port = PickFreePort();
  ASSERT_TRUE(harness_->StartAgent({"--metrics_listen=127.0.0.1:" + std::to_string(port)}))
      << harness_->AgentLog();
  ASSERT_TRUE(WaitForTcpPort(port, 10000));
  Attach(*harness_, kDev);
  ASSERT_TRUE(harness_->kernel().WriteDevice(kDev, 0, Pattern(4096, 3)).ok());
  v1::Snapshot s = CreateSnapshot(*harness_, {kDev}, 64 * kMiB);
  Info(*harness_, kDev);
  Info(*harness_, kDev);
  v1::GetCbtInfoRequest bad;
  bad.set_device("/dev/emu-none");
  v1::CbtInfo ignored;
  harness_->agent().GetCbtInfo(Deadline().get(), bad, &ignored);

  const std::string text = HttpGet(port, "/metrics");
  EXPECT_NE(text.find("cbt_agent_rpc_total{method=\"GetCbtInfo\",code=\"OK\"} 2"),
            std::string::npos) << text;
  EXPECT_NE(text.find("cbt_agent_rpc_total{method=\"GetCbtInfo\",code=\"NOT_FOUND\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("cbt_agent_rpc_duration_seconds_count{method=\"CreateSnapshot\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("cbt_agent_trackers 1"), std::string::npos);
  EXPECT_NE(text.find("cbt_agent_snapshots 1"), std::string::npos);
  EXPECT_NE(text.find("cbt_agent_dirty_blocks{device=\"/dev/emu-a\"} 1"), std::string::npos);
  Release(*harness_, s.id());
}

TEST_F(TransportTest, CapabilitiesNameTheBackendAndFlavour) {
  ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();
  v1::Capabilities caps;
  ASSERT_TRUE(harness_->agent().GetCapabilities(Deadline().get(), {}, &caps).ok());
  EXPECT_EQ(caps.backend(), v1::BACKEND_KIND_BLKSNAP);
  EXPECT_EQ(caps.blksnap().flavour(), v1::BLKSNAP_FLAVOUR_LK615);
  EXPECT_EQ(caps.blksnap().module_version(), "2.0.0.0");
  EXPECT_EQ(caps.blksnap().control_device(), "/dev/blksnap-control");
  EXPECT_FALSE(caps.agent_version().empty());
  EXPECT_FALSE(caps.kernel_release().empty());
  EXPECT_FALSE(caps.backend_reason().empty());
}

}  // namespace
}  // namespace cbt::testing
