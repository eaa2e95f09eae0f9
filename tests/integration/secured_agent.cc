#include "secured_agent.h"

#include <sys/stat.h>

#include "process.h"

namespace cbt::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

}  // namespace

SecuredAgent::SecuredAgent()
    : harness_("lk6.15", "6.15.0",
               {{"/dev/emu-a", 64 * kMiB, 8, 16},
                {"/dev/emu-b", 64 * kMiB, 8, 32},
                {"/dev/emu-c", 64 * kMiB, 8, 48},
                {"/dev/emu-d", 64 * kMiB, 8, 64},
                {"/dev/other-x", 64 * kMiB, 8, 80},
                {"/dev/other-y", 64 * kMiB, 8, 96}}),
      certificates_(harness_.work_dir()) {}

bool SecuredAgent::Start(const std::vector<std::string>& extra_flags, std::string* error) {
  const std::string w = harness_.work_dir();
  if (!harness_.StartEmulator()) {
    *error = "the emulator did not start";
    return false;
  }
  if (!certificates_.MakeAuthority("ca") || !certificates_.MakeServer() ||
      !certificates_.MakeClient("controller", "backup-controller") ||
      !certificates_.MakeClient("auditor", "auditor") ||
      !certificates_.MakeClient("intruder", "intruder") ||
      !certificates_.MakeClient("mover", "data-mover", kMoverSan)) {
    *error = certificates_.OpensslLog();
    return false;
  }
  if (!WriteFileWithMode(w + "/tokens",
                         std::string(kReaderToken) + " reader read\n" + kWriterToken +
                             " writer write\n" + kExpiredToken +
                             " old-writer write expires=2020-01-01T00:00:00Z\n",
                         0600) ||
      !WriteFileWithMode(w + "/policy",
                         "# the security tests' policy\n"
                         "grant write cert-cn:backup-controller\n"
                         "grant read cert-cn:auditor\n"
                         "grant write cert-san:" +
                             std::string(kMoverSan) + "\n",
                         0644)) {
    *error = "cannot write the token or policy file";
    return false;
  }
  const int port = PickFreePort();
  target_ = "localhost:" + std::to_string(port);
  std::vector<std::string> flags = certificates_.ServerFlags();
  for (const std::string& flag : std::vector<std::string>{
           "--listen=127.0.0.1:" + std::to_string(port), "--auth_tokens_file=" + w + "/tokens",
           "--authz_policy=" + w + "/policy", "--device_allow=/dev/emu-*",
           "--diff_storage_allow=/dev/emu-c", "--diff_storage_allow=/dev/emu-d",
           "--diff_storage_allow=/dev/other-y"}) {
    flags.push_back(flag);
  }
  flags.insert(flags.end(), extra_flags.begin(), extra_flags.end());
  if (!harness_.StartAgent(flags) || !WaitForTcpPort(port, 10000)) {
    *error = harness_.AgentLog();
    return false;
  }
  return true;
}

}  // namespace cbt::testing
