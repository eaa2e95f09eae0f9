// The other side of the attack table: granted callers get through on every transport, every
// API method is authorized (also methods added later), bad security settings stop the daemon
// at startup, and cbtctl authenticates with a bearer token.
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <future>
#include <thread>

#include "api_calls.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "secured_agent.h"

namespace cbt::testing {
namespace {

using Code = grpc::StatusCode;

TEST(SecurityTest, GrantedCallersGetThrough) {
  SecuredAgent secured;
  std::string error;
  ASSERT_TRUE(secured.Start({}, &error)) << error;
  AgentHarness& h = secured.harness();
  Caller reader = secured.WithToken(kReaderToken);
  Caller writer = secured.WithToken(kWriterToken);
  Caller controller = secured.WithCertificate("controller");
  Caller auditor = secured.WithCertificate("auditor");
  Caller mover = secured.WithCertificate("mover");
  Caller unix = secured.Unix();

  // Unix-socket callers keep every method (no 'unix' line in the policy).
  EXPECT_TRUE(unix.Attach("/dev/emu-a").ok());
  // A write token mutates; a read token reads.
  EXPECT_TRUE(writer.Attach("/dev/emu-b").ok());
  EXPECT_TRUE(writer.MarkDirty("/dev/emu-a", 3).ok());
  std::string id;
  grpc::Status created = writer.Create({"/dev/emu-a"}, h.diff_dir(), &id);
  ASSERT_TRUE(created.ok()) << created.error_message();
  const std::string generation = Info(h, "/dev/emu-a").generation_id();
  EXPECT_TRUE(reader.ListTrackers().ok());
  EXPECT_TRUE(reader.GetCbtInfo("/dev/emu-a").ok());
  EXPECT_TRUE(reader.ReadMap("/dev/emu-a").ok());
  EXPECT_TRUE(reader.Extents("/dev/emu-a", generation).ok());
  EXPECT_TRUE(Caller(reader.channel(), {{"authorization", std::string("bearer ") + kReaderToken}})
                  .Echo("scheme is case-insensitive")
                  .ok());
  EXPECT_TRUE(writer.Release(id).ok());
  // A block device allowlisted for diff storage.
  grpc::Status on_device = writer.Create({"/dev/emu-a"}, "/dev/emu-d", &id);
  ASSERT_TRUE(on_device.ok()) << on_device.error_message();
  EXPECT_TRUE(writer.Release(id).ok());
  // Certificates: CN granted write, CN granted read, URI SAN granted write.
  EXPECT_TRUE(controller.Attach("/dev/emu-c").ok());
  EXPECT_TRUE(auditor.GetCbtInfo("/dev/emu-c").ok());
  EXPECT_TRUE(mover.Detach("/dev/emu-c").ok());
  EXPECT_TRUE(mover.Detach("/dev/emu-b").ok());
  // Symlinks are fine when they resolve inside the allowlist.
  ASSERT_TRUE(h.kernel().AddSymlink("/dev/disk-by-id-a", "/dev/emu-a").ok());
  EXPECT_TRUE(reader.GetCbtInfo("/dev/disk-by-id-a").ok());
  // Health stays open on the API's TCP listener, without any credential.
  auto health = grpc::health::v1::Health::NewStub(secured.Anonymous().channel());
  grpc::health::v1::HealthCheckResponse serving;
  EXPECT_TRUE(health->Check(Deadline().get(), {}, &serving).ok());
  EXPECT_EQ(h.AgentLog().find("denied "), std::string::npos) << h.AgentLog();
}

// Calls `method` with an empty request through the generic stub (no generated code, so every
// method of the descriptor, including ones added later, is reached).
grpc::Status CallGeneric(std::shared_ptr<grpc::Channel> channel, const std::string& method,
                         const std::string& token) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  // Short: an admitted WatchSnapshotEvents sends nothing and runs until the deadline.
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);  // zero bytes: a valid empty message of any type
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(status); });
  return done.get_future().get();
}

TEST(SecurityTest, EveryApiMethodIsAuthorized) {
  SecuredAgent secured;
  std::string error;
  ASSERT_TRUE(secured.Start({}, &error)) << error;
  const auto* service =
      cbtagent::v1::EchoRequest::descriptor()->file()->FindServiceByName("CbtAgent");
  ASSERT_NE(service, nullptr);
  auto channel = secured.Anonymous().channel();
  int reads = 0, writes = 0;
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string name = service->method(i)->name();
    const std::string path = "/cbtagent.v1.CbtAgent/" + name;
    const bool mutating = name == "AttachTracker" || name == "DetachTracker" ||
                          name == "CreateSnapshot" || name == "ReleaseSnapshot" ||
                          name == "MarkDirty";
    (mutating ? writes : reads)++;
    EXPECT_EQ(CallGeneric(channel, path, "").error_code(), Code::UNAUTHENTICATED) << name;
    EXPECT_EQ(CallGeneric(channel, path, kUnknownToken).error_code(), Code::UNAUTHENTICATED)
        << name;
    const Code as_reader = CallGeneric(channel, path, kReaderToken).error_code();
    if (mutating) {
      EXPECT_EQ(as_reader, Code::PERMISSION_DENIED) << name;
    } else {
      EXPECT_NE(as_reader, Code::PERMISSION_DENIED) << name;
      EXPECT_NE(as_reader, Code::UNAUTHENTICATED) << name;
    }
    const Code as_writer = CallGeneric(channel, path, kWriterToken).error_code();
    EXPECT_NE(as_writer, Code::PERMISSION_DENIED) << name;
    EXPECT_NE(as_writer, Code::UNAUTHENTICATED) << name;
  }
  EXPECT_EQ(reads, 10);
  EXPECT_EQ(writes, 5);
  EXPECT_EQ(secured.harness().agent_process().ExitedStatus(), -1);
}

// Launches the agent with `flags` and expects it to exit non-zero naming `reason`.
void ExpectRefusedToStart(AgentHarness& h, const std::vector<std::string>& flags,
                          const std::string& reason) {
  std::vector<std::string> args = {"--listen=unix:" + h.agent_socket()};
  args.insert(args.end(), flags.begin(), flags.end());
  const size_t log_before = h.AgentLog().size();
  ASSERT_TRUE(h.LaunchAgent(args));
  int status = -1;
  for (int i = 0; i < 200 && status == -1; ++i) {
    status = h.agent_process().ExitedStatus();
    if (status == -1) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (status == -1) h.StopAgent(SIGKILL);
  ASSERT_NE(status, -1) << "the agent must refuse to start: " << reason;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  const std::string log = h.AgentLogSince(log_before);
  EXPECT_NE(log.find("cannot start"), std::string::npos) << log;
  EXPECT_NE(log.find(reason), std::string::npos) << log;
}

TEST(SecurityTest, BadSecuritySettingsStopTheDaemon) {
  AgentHarness h("lk6.15", "6.15.0", {{"/dev/emu-a", 64 * 1024 * 1024, 8, 16}});
  ASSERT_TRUE(h.StartEmulator());
  const std::string w = h.work_dir();
  const std::string token = "0123456789abcdef0123456789abcdef";
  ASSERT_TRUE(WriteFileWithMode(w + "/open-tokens", token + " reader read\n", 0644));
  ASSERT_TRUE(WriteFileWithMode(w + "/tokens", token + " reader read\n", 0600));
  ASSERT_TRUE(WriteFileWithMode(w + "/ghost-policy", "grant write token:ghost\n", 0644));
  ASSERT_TRUE(WriteFileWithMode(w + "/typo-policy", "grant write cert-cn:a\ngrnat read x\n", 0644));
  ASSERT_TRUE(WriteFileWithMode(w + "/shared-policy", "unix read\n", 0666));
  ASSERT_TRUE(WriteFileWithMode(w + "/weak-tokens", "secret reader read\n", 0600));

  ExpectRefusedToStart(h, {"--auth_tokens_file=" + w + "/open-tokens"}, "mode 0644");
  ExpectRefusedToStart(h, {"--auth_tokens_file=" + w + "/weak-tokens"}, "line 1");
  ExpectRefusedToStart(h, {"--auth_tokens_file=" + w + "/missing"}, "cannot open");
  ExpectRefusedToStart(
      h, {"--authz_policy=" + w + "/ghost-policy", "--auth_tokens_file=" + w + "/tokens"},
      "token:ghost");
  ExpectRefusedToStart(h, {"--authz_policy=" + w + "/typo-policy"}, "line 2");
  ExpectRefusedToStart(h, {"--authz_policy=" + w + "/shared-policy"}, "mode 0666");
  ExpectRefusedToStart(h, {"--diff_storage_allow=" + w + "/no-such-dir"}, "no-such-dir");
  ExpectRefusedToStart(h, {"--device_allow=dev/*"}, "absolute pattern");
  ExpectRefusedToStart(h, {"--max_concurrent_streams=0"}, "--max_concurrent_streams");
  ExpectRefusedToStart(h, {"--max_receive_message_bytes=100"}, "--max_receive_message_bytes");
  ExpectRefusedToStart(h, {"--max_stream_duration=0s"}, "--max_stream_duration");
  // And the same files, fixed, are accepted.
  ASSERT_TRUE(h.StartAgent({"--auth_tokens_file=" + w + "/tokens"})) << h.AgentLog();
}

TEST(SecurityTest, DefaultDiffStorageAllowlistIsUnderTheStateDir) {
  AgentHarness h("lk6.15", "6.15.0", {{"/dev/emu-a", 64 * 1024 * 1024, 8, 16}});
  ASSERT_TRUE(h.StartEmulator());
  // Without the harness's --diff_storage_allow: the daemon makes <state_dir>/diff itself.
  std::vector<std::string> argv = {
      CBT_AGENT_BINARY, "--state_dir=" + h.state_dir(), "--backend=blksnap",
      "--blksnap_emulator_socket=" + h.kernel_socket(), "--listen=unix:" + h.agent_socket()};
  ASSERT_TRUE(h.agent_process().Start(argv, h.work_dir() + "/agent.log"));
  ASSERT_TRUE(WaitForUnixSocket(h.agent_socket(), 15000)) << h.AgentLog();
  struct stat st;
  ASSERT_EQ(::stat((h.state_dir() + "/diff").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  Caller unix(grpc::CreateChannel("unix:" + h.agent_socket(), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(unix.Attach("/dev/emu-a").ok());
  EXPECT_EQ(unix.Create({"/dev/emu-a"}, h.diff_dir()).error_code(), Code::PERMISSION_DENIED);
  std::string id;
  grpc::Status created = unix.Create({"/dev/emu-a"}, h.state_dir() + "/diff", &id);
  ASSERT_TRUE(created.ok()) << created.error_message();
  EXPECT_TRUE(unix.Release(id).ok());
}

TEST(SecurityTest, CbtctlAuthenticatesWithABearerTokenFile) {
  SecuredAgent secured;
  std::string error;
  ASSERT_TRUE(secured.Start({}, &error)) << error;
  const std::string w = secured.work_dir();
  ASSERT_TRUE(WriteFileWithMode(w + "/writer.token", std::string(kWriterToken) + "\n", 0600));
  auto run = [&](const std::string& args, std::string* output) {
    const std::string command = std::string(CBTCTL_BINARY) + " --address " + secured.target() +
                                " --tls_ca " + w + "/ca.pem " + args + " 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    char buffer[4096];
    size_t n;
    output->clear();
    while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output->append(buffer, n);
    const int status = ::pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string output;
  EXPECT_EQ(run("attach /dev/emu-a", &output), 1) << output;
  EXPECT_NE(output.find("UNAUTHENTICATED"), std::string::npos) << output;
  EXPECT_EQ(run("--token_file " + w + "/writer.token attach /dev/emu-a", &output), 0) << output;
  EXPECT_EQ(run("--token_file " + w + "/writer.token trackers", &output), 0) << output;
  EXPECT_NE(output.find("/dev/emu-a"), std::string::npos) << output;
  EXPECT_EQ(run("--token_file " + w + "/writer.token attach /dev/other-x", &output), 1);
  EXPECT_NE(output.find("PERMISSION_DENIED"), std::string::npos) << output;
  // Never in the clear.
  EXPECT_EQ(run("--insecure --token_file " + w + "/writer.token trackers", &output), 2) << output;
}

}  // namespace
}  // namespace cbt::testing
