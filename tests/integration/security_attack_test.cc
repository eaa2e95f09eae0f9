// The attack table: requests an attacker (or a confused client) might send, against the real
// daemon through real gRPC clients. Each row must get its exact status code, the daemon must
// log the refusal ("denied <Method> ... <CODE>: <reason>") and keep running. Four daemons:
//   main   emulator; Unix socket + mutual-TLS TCP with bearer tokens and a policy, devices
//          allowlisted as /dev/emu-*, small stream limits
//   plain  emulator; plaintext TCP (--allow_insecure_tcp) without any grant
//   local  emulator; Unix socket only, policy 'unix read'
//   host   no emulator: the host's real /dev (character devices, fifos, symlinks), backend none
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "agent_harness.h"
#include "credentials.h"
#include "secure_client.h"
#include "secured_agent.h"

namespace cbt::testing {
namespace {

using Code = grpc::StatusCode;
constexpr uint64_t kMiB = 1024 * 1024;

// The daemon logs codes by absl's names (gRPC and absl share the numbering).
std::string CodeName(Code code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

struct Row {
  std::string name;
  AgentHarness* daemon;
  std::string method;  // as logged
  std::function<grpc::Status()> call;
  Code code;
  std::string reason;  // part of the logged reason
};

// A log line "... denied <method> ... <CODE>: ...<reason>..." in `log`.
bool LoggedDenial(const std::string& log, const Row& row) {
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("warning: denied " + row.method + " from ") != std::string::npos &&
        line.find(std::string(": ") + CodeName(row.code) + ": ") != std::string::npos &&
        line.find(row.reason) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// The path of a character device `major`:`minor` named `name`: /dev/<name> when the host has
// it, else a node made with mknod(2) in `dir` (which the host daemon allowlists); "" when
// neither is possible (no CAP_MKNOD).
std::string CharDevice(const std::string& name, unsigned major, unsigned minor,
                       const std::string& dir) {
  struct stat st;
  const std::string host = "/dev/" + name;
  if (::stat(host.c_str(), &st) == 0 && S_ISCHR(st.st_mode)) return host;
  const std::string made = dir + "/" + name;
  if (::mknod(made.c_str(), S_IFCHR | 0600, makedev(major, minor)) == 0) return made;
  return "";
}

TEST(SecurityAttackTest, EveryAttackGetsItsCodeIsLoggedAndTheDaemonSurvives) {
  // ---- main: mutual TLS + tokens + policy, allowlists, limits
  SecuredAgent secured;
  std::string error;
  ASSERT_TRUE(secured.Start({"--max_concurrent_streams=2", "--max_stream_duration=2s"}, &error))
      << error;
  AgentHarness& main = secured.harness();
  ASSERT_TRUE(main.kernel().AddSymlink("/dev/emu-link", "/dev/blksnap-control").ok());
  ASSERT_TRUE(main.kernel().AddSymlink("/dev/emu-escape", "/dev/other-x").ok());
  const std::string w = main.work_dir();
  ASSERT_EQ(::mkdir((w + "/outside").c_str(), 0700), 0);
  ASSERT_EQ(::symlink((w + "/outside").c_str(), (main.diff_dir() + "/escape").c_str()), 0);
  ASSERT_TRUE(WriteFileWithMode(w + "/disk.img", "not a device", 0600));
  Caller anonymous = secured.Anonymous();
  Caller reader = secured.WithToken(kReaderToken);
  Caller writer = secured.WithToken(kWriterToken);
  Caller intruder = secured.WithCertificate("intruder");
  Caller auditor = secured.WithCertificate("auditor");
  Caller unix_main(main.channel());
  ASSERT_TRUE(unix_main.Attach("/dev/emu-a").ok());
  ASSERT_TRUE(unix_main.Attach("/dev/emu-c").ok());

  // ---- plain: TCP without TLS and without any grant
  AgentHarness plain("lk6.15", "6.15.0", {{"/dev/emu-a", 64 * kMiB, 8, 16}});
  ASSERT_TRUE(plain.StartEmulator());
  const int plain_port = PickFreePort();
  ASSERT_TRUE(plain.StartAgent(
      {"--listen=127.0.0.1:" + std::to_string(plain_port), "--allow_insecure_tcp"}))
      << plain.AgentLog();
  ASSERT_TRUE(WaitForTcpPort(plain_port, 10000));
  auto plain_channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(plain_port),
                                           grpc::InsecureChannelCredentials());
  Caller plain_anonymous(plain_channel);
  Caller plain_token = Caller::Bearer(plain_channel, kWriterToken);

  // ---- local: Unix socket, read-only for socket callers
  AgentHarness local("lk6.15", "6.15.0", {{"/dev/emu-a", 64 * kMiB, 8, 16}});
  ASSERT_TRUE(local.StartEmulator());
  ASSERT_TRUE(WriteFileWithMode(local.work_dir() + "/policy", "unix read\n", 0644));
  ASSERT_TRUE(local.StartAgent({"--authz_policy=" + local.work_dir() + "/policy"}))
      << local.AgentLog();
  Caller local_unix(local.channel());
  ASSERT_TRUE(local_unix.ListTrackers().ok()) << "unix read still reads";

  // ---- host: the host's /dev and real symlinks, fifos and files
  AgentHarness host("lk6.15", "6.15.0", {});
  const std::string nodes = host.work_dir() + "/dev";
  ASSERT_EQ(::mkdir(nodes.c_str(), 0700), 0);
  ASSERT_TRUE(host.StartHostAgent({"--device_allow=/dev/*", "--device_allow=" + nodes + "/*"}))
      << host.AgentLog();
  Caller host_unix(host.channel());
  const std::string mem = CharDevice("mem", 1, 1, nodes);
  const std::string kmem = CharDevice("kmem", 1, 2, nodes);
  const std::string port_dev = CharDevice("port", 1, 4, nodes);
  ASSERT_EQ(::symlink("/dev/null", (nodes + "/evil").c_str()), 0);
  ASSERT_EQ(::mkfifo((nodes + "/fifo").c_str(), 0600), 0);
  ASSERT_TRUE(WriteFileWithMode(nodes + "/disk.img", "not a device", 0600));

  std::vector<Row> rows = {
      // Authentication and authorization (main, TCP with mutual TLS)
      {"TLS without certificate or token", &main, "ListTrackers",
       [&] { return anonymous.ListTrackers(); }, Code::UNAUTHENTICATED, "TCP callers must present"},
      {"unknown bearer token", &main, "GetCbtInfo",
       [&] { return Caller::Bearer(anonymous.channel(), kUnknownToken).GetCbtInfo("/dev/emu-a"); },
       Code::UNAUTHENTICATED, "unknown bearer token"},
      {"authorization: Basic instead of Bearer", &main, "Echo",
       [&] {
         return Caller(anonymous.channel(), {{"authorization", "Basic d3JpdGVyOnB3"}}).Echo("x");
       },
       Code::UNAUTHENTICATED, "malformed authorization metadata"},
      {"authorization: 'Bearer ' without a token", &main, "Echo",
       [&] {
         return Caller(anonymous.channel(), {{"authorization", "Bearer "}}).Echo("x");
       },
       Code::UNAUTHENTICATED, "malformed authorization metadata"},
      {"token with characters outside b64token", &main, "Echo",
       [&] {
         return Caller::Bearer(anonymous.channel(), std::string(kWriterToken) + " x").Echo("x");
       },
       Code::UNAUTHENTICATED, "malformed authorization metadata"},
      {"two authorization entries (reader + writer)", &main, "AttachTracker",
       [&] {
         return Caller(anonymous.channel(),
                       {{"authorization", std::string("Bearer ") + kReaderToken},
                        {"authorization", std::string("Bearer ") + kWriterToken}})
             .Attach("/dev/emu-b");
       },
       Code::UNAUTHENTICATED, "more than one authorization"},
      {"expired token", &main, "AttachTracker",
       [&] { return Caller::Bearer(anonymous.channel(), kExpiredToken).Attach("/dev/emu-b"); },
       Code::UNAUTHENTICATED, "expired at 2020-01-01"},
      {"read token: AttachTracker", &main, "AttachTracker",
       [&] { return reader.Attach("/dev/emu-b"); }, Code::PERMISSION_DENIED,
       "token:reader has read access; AttachTracker needs write"},
      {"read token: DetachTracker", &main, "DetachTracker",
       [&] { return reader.Detach("/dev/emu-a"); }, Code::PERMISSION_DENIED,
       "DetachTracker needs write"},
      {"read token: CreateSnapshot", &main, "CreateSnapshot",
       [&] { return reader.Create({"/dev/emu-a"}, main.diff_dir()); }, Code::PERMISSION_DENIED,
       "CreateSnapshot needs write"},
      {"read token: ReleaseSnapshot", &main, "ReleaseSnapshot",
       [&] { return reader.Release("0b6e1a52-3c1d-4f6e-9a55-6d1f1e2c3b4a"); },
       Code::PERMISSION_DENIED, "ReleaseSnapshot needs write"},
      {"read token: MarkDirty", &main, "MarkDirty",
       [&] { return reader.MarkDirty("/dev/emu-a", 1); }, Code::PERMISSION_DENIED,
       "MarkDirty needs write"},
      {"certificate CN not granted", &main, "ListTrackers", [&] { return intruder.ListTrackers(); },
       Code::PERMISSION_DENIED, "cert-cn:intruder has none access"},
      {"read certificate: AttachTracker", &main, "AttachTracker",
       [&] { return auditor.Attach("/dev/emu-b"); }, Code::PERMISSION_DENIED,
       "cert-cn:auditor has read access"},
      {"granted certificate with an unknown token", &main, "GetCbtInfo",
       [&] {
         return Caller::Bearer(secured.certificates().Channel(secured.target(), "controller"),
                               kUnknownToken)
             .GetCbtInfo("/dev/emu-a");
       },
       Code::UNAUTHENTICATED, "unknown bearer token"},
      // Devices (main: --device_allow=/dev/emu-*, emulator's device nodes)
      {"the blksnap control device", &main, "AttachTracker",
       [&] { return writer.Attach("/dev/blksnap-control"); }, Code::PERMISSION_DENIED,
       "outside the device allowlist"},
      {"symlink in the allowlist to the control device", &main, "AttachTracker",
       [&] { return writer.Attach("/dev/emu-link"); }, Code::PERMISSION_DENIED,
       "resolves to /dev/blksnap-control) is outside the device allowlist"},
      {"block device outside the allowlist", &main, "AttachTracker",
       [&] { return writer.Attach("/dev/other-x"); }, Code::PERMISSION_DENIED,
       "/dev/other-x is outside the device allowlist"},
      {"symlink in the allowlist to a device outside it", &main, "AttachTracker",
       [&] { return writer.Attach("/dev/emu-escape"); }, Code::PERMISSION_DENIED,
       "resolves to /dev/other-x) is outside"},
      {"../ escape from an allowed device", &main, "AttachTracker",
       [&] { return writer.Attach("/dev/emu-a/../other-x"); }, Code::PERMISSION_DENIED,
       "'..' components are not allowed"},
      {"../ escape to /etc/shadow", &main, "AttachTracker",
       [&] { return writer.Attach("/dev/emu-a/../../etc/shadow"); }, Code::PERMISSION_DENIED,
       "'..' components are not allowed"},
      {"regular file", &main, "AttachTracker", [&] { return writer.Attach(w + "/disk.img"); },
       Code::PERMISSION_DENIED, "outside the device allowlist"},
      {"directory", &main, "AttachTracker", [&] { return writer.Attach(w + "/outside"); },
       Code::INVALID_ARGUMENT, "is a directory, not a block device"},
      {"read method on a device outside the allowlist", &main, "GetCbtInfo",
       [&] { return reader.GetCbtInfo("/dev/other-x"); }, Code::PERMISSION_DENIED,
       "outside the device allowlist"},
      {"snapshot of a device outside the allowlist", &main, "CreateSnapshot",
       [&] {
         return writer.Create({"/dev/emu-a", "/dev/other-x"}, main.diff_dir());
       },
       Code::PERMISSION_DENIED, "/dev/other-x is outside the device allowlist"},
      // Diff storage (main: --diff_storage_allow=<work>/diff, /dev/emu-c, /dev/other-y)
      {"diff storage outside the allowlist", &main, "CreateSnapshot",
       [&] { return writer.Create({"/dev/emu-a"}, w + "/outside"); }, Code::PERMISSION_DENIED,
       "outside the diff-storage allowlist"},
      {"diff storage /etc/passwd (would be overwritten)", &main, "CreateSnapshot",
       [&] { return writer.Create({"/dev/emu-a"}, "/etc/passwd"); }, Code::PERMISSION_DENIED,
       "/etc/passwd is outside the diff-storage allowlist"},
      {"diff storage: symlink in the allowed dir to outside", &main, "CreateSnapshot",
       [&] { return writer.Create({"/dev/emu-a"}, main.diff_dir() + "/escape"); },
       Code::PERMISSION_DENIED, "/outside) is outside the diff-storage allowlist"},
      {"diff storage ../ escape", &main, "CreateSnapshot",
       [&] { return writer.Create({"/dev/emu-a"}, main.diff_dir() + "/../outside"); },
       Code::PERMISSION_DENIED, "'..' components are not allowed"},
      {"diff storage: the control device", &main, "CreateSnapshot",
       [&] { return writer.Create({"/dev/emu-a"}, "/dev/blksnap-control"); },
       Code::PERMISSION_DENIED, "outside the diff-storage allowlist"},
      {"diff storage: block device allowlisted for diff storage only", &main, "CreateSnapshot",
       [&] { return writer.Create({"/dev/emu-a"}, "/dev/other-y"); }, Code::PERMISSION_DENIED,
       "is a block device outside the device allowlist"},
      {"diff storage: a device of the same snapshot", &main, "CreateSnapshot",
       [&] {
         return writer.Create({"/dev/emu-a", "/dev/emu-c"}, "/dev/emu-c");
       },
       Code::FAILED_PRECONDITION, "which is part of this snapshot"},
      // Limits (main: default 4 MiB messages, 2 streams, 2 s per stream)
      {"request over --max_receive_message_bytes (4 MiB + 1 byte)", &main, "Echo",
       [&] { return writer.Echo(std::string(4 * kMiB + 1, 'x')); }, Code::RESOURCE_EXHAUSTED,
       "--max_receive_message_bytes"},
      {"MarkDirty with 65,537 ranges", &main, "MarkDirty",
       [&] { return writer.MarkDirty("/dev/emu-a", 65537); }, Code::INVALID_ARGUMENT,
       "at most 65536 ranges per call"},
      {"stream past --max_stream_duration=2s", &main, "WatchSnapshotEvents",
       [&] {
         auto context = reader.Context(30);
         auto stream = reader.stub().WatchSnapshotEvents(context.get(), {});
         stream->WaitForInitialMetadata();
         const auto start = std::chrono::steady_clock::now();
         v1::SnapshotEvent event;
         while (stream->Read(&event)) {
         }
         grpc::Status status = stream->Finish();
         const auto took = std::chrono::steady_clock::now() - start;
         EXPECT_GE(took, std::chrono::milliseconds(1500));
         EXPECT_LT(took, std::chrono::seconds(10));
         return status;
       },
       Code::DEADLINE_EXCEEDED, "ran for --max_stream_duration=2s; resubscribe"},
      {"third stream over --max_concurrent_streams=2", &main, "ReadCbtMap",
       [&] {
         auto first_context = reader.Context(30);
         auto second_context = reader.Context(30);
         auto first = reader.stub().WatchSnapshotEvents(first_context.get(), {});
         auto second = reader.stub().WatchSnapshotEvents(second_context.get(), {});
         first->WaitForInitialMetadata();  // both hold their slots from here on
         second->WaitForInitialMetadata();
         grpc::Status third = reader.ReadMap("/dev/emu-a");
         first_context->TryCancel();
         second_context->TryCancel();
         first->Finish();
         second->Finish();
         return third;
       },
       Code::RESOURCE_EXHAUSTED, "2 streams are open (--max_concurrent_streams)"},
      // plain: TCP without TLS and without grants
      {"plaintext TCP without a policy", &plain, "Echo", [&] { return plain_anonymous.Echo("x"); },
       Code::UNAUTHENTICATED, "TCP callers must present"},
      {"plaintext TCP, token the agent does not know", &plain, "AttachTracker",
       [&] { return plain_token.Attach("/dev/emu-a"); }, Code::UNAUTHENTICATED,
       "unknown bearer token"},
      // local: policy 'unix read'
      {"Unix socket under 'unix read': AttachTracker", &local, "AttachTracker",
       [&] { return local_unix.Attach("/dev/emu-a"); }, Code::PERMISSION_DENIED,
       "unix has read access; AttachTracker needs write"},
      // host: the real /dev
      {"/dev/null", &host, "AttachTracker", [&] { return host_unix.Attach("/dev/null"); },
       Code::PERMISSION_DENIED, "/dev/null is a character device"},
      {"/dev/zero", &host, "AttachTracker", [&] { return host_unix.Attach("/dev/zero"); },
       Code::PERMISSION_DENIED, "/dev/zero is a character device"},
      {"symlink in an allowed directory to /dev/null", &host, "AttachTracker",
       [&] { return host_unix.Attach(nodes + "/evil"); }, Code::PERMISSION_DENIED,
       "(resolves to /dev/null) is a character device"},
      {"fifo in an allowed directory", &host, "AttachTracker",
       [&] { return host_unix.Attach(nodes + "/fifo"); }, Code::PERMISSION_DENIED,
       "character device or other special file"},
      {"regular file in an allowed directory", &host, "AttachTracker",
       [&] { return host_unix.Attach(nodes + "/disk.img"); }, Code::PERMISSION_DENIED,
       "is a regular file; only block devices are allowed"},
      {"/dev/urandom", &host, "AttachTracker", [&] { return host_unix.Attach("/dev/urandom"); },
       Code::PERMISSION_DENIED, "/dev/urandom is a character device"},
  };
  // /dev/mem, /dev/kmem and /dev/port: the host's nodes, or nodes with their numbers.
  int skipped = 0;
  for (const auto& [name, path] : {std::pair<std::string, std::string>{"/dev/mem (1:1)", mem},
                                   {"/dev/kmem (1:2)", kmem},
                                   {"/dev/port (1:4)", port_dev}}) {
    if (path.empty()) {
      std::printf("security: skipped '%s': no such node and no CAP_MKNOD\n", name.c_str());
      ++skipped;
      continue;
    }
    rows.push_back({name + " at " + path, &host, "AttachTracker",
                    [&host_unix, path] { return host_unix.Attach(path); }, Code::PERMISSION_DENIED,
                    path + " is a character device"});
  }
  if (!mem.empty()) {
    rows.push_back({"/dev/mem through a read method", &host, "GetCbtInfo",
                    [&host_unix, mem] { return host_unix.GetCbtInfo(mem); },
                    Code::PERMISSION_DENIED, "is a character device"});
  }

  int matched = 0, logged = 0, survived = 0;
  for (const Row& row : rows) {
    const size_t log_before = row.daemon->AgentLog().size();
    const grpc::Status status = row.call();
    const std::string log = row.daemon->AgentLogSince(log_before);
    const bool code_ok = status.error_code() == row.code;
    const bool log_ok = LoggedDenial(log, row);
    const bool alive = row.daemon->agent_process().ExitedStatus() == -1;
    EXPECT_TRUE(code_ok) << row.name << ": got " << CodeName(status.error_code()) << " ("
                         << status.error_message() << "), want " << CodeName(row.code);
    EXPECT_TRUE(log_ok) << row.name << ": no denial logged for " << row.method << " with '"
                        << row.reason << "'; log:\n"
                        << log;
    ASSERT_TRUE(alive) << "the daemon died at: " << row.name;
    matched += code_ok;
    logged += log_ok;
    survived += alive;
    std::printf("security: %-60s %-20s %s\n", row.name.c_str(),
                CodeName(status.error_code()).c_str(),
                code_ok && log_ok ? "ok" : "MISMATCH");
  }
  // Beyond twice the limit gRPC's transport refuses the request before the agent sees it: the
  // same code, no log line (docs/RELIABILITY.md), and the daemon unaffected.
  EXPECT_EQ(writer.Echo(std::string(8 * kMiB + 1, 'x')).error_code(), Code::RESOURCE_EXHAUSTED);
  EXPECT_EQ(main.agent_process().ExitedStatus(), -1);
  EXPECT_TRUE(writer.Echo("still there").ok());

  std::printf(
      "security: %d of %zu attacks got their code, %d logged, daemon alive after %d, "
      "%d skipped\n",
      matched, rows.size(), logged, survived, skipped);
  EXPECT_GE(rows.size(), 24u);
}

}  // namespace
}  // namespace cbt::testing
