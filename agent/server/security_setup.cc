#include "server/security_setup.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "backend/errno_status.h"
#include "backend/log.h"
#include "blksnap/remote_kernel.h"

namespace cbt::agent {
namespace {

bool IsTcp(const std::string& listen) { return listen.rfind("unix:", 0) != 0; }

absl::StatusOr<std::unique_ptr<Authorizer>> MakeAuthorizer(const AgentOptions& options) {
  if (absl::Status s = Authorizer::CheckEveryMethodClassified(); !s.ok()) return s;
  AuthzPolicy policy;
  if (!options.authz_policy.empty()) {
    auto loaded = AuthzPolicy::Load(options.authz_policy);
    if (!loaded.ok()) return loaded.status();
    policy = *std::move(loaded);
  }
  TokenStore tokens;
  if (!options.auth_tokens_file.empty()) {
    auto loaded = TokenStore::Load(options.auth_tokens_file);
    if (!loaded.ok()) return loaded.status();
    tokens = *std::move(loaded);
  }
  for (const std::string& name : policy.TokenNames()) {
    if (!tokens.HasName(name)) {
      return absl::InvalidArgumentError(absl::StrCat("--authz_policy grants to token:", name,
                                                     ", which --auth_tokens_file does not name"));
    }
  }

  const bool any_tcp = std::any_of(options.listen.begin(), options.listen.end(), IsTcp);
  if (any_tcp && policy.grant_count() == 0 && tokens.size() == 0) {
    LogWarning("cbt-agent",
               "no --authz_policy grants and no --auth_tokens_file: every API call on the TCP "
               "listeners will be refused");
  }
  if (policy.HasCertificateGrants() && options.tls_client_ca.empty()) {
    LogWarning("cbt-agent",
               "--authz_policy grants to certificates, but without --tls_client_ca no client "
               "presents one: those grants cannot apply");
  }
  if (tokens.size() > 0 && any_tcp && options.tls_cert.empty()) {
    LogWarning("cbt-agent",
               "bearer tokens are accepted on plaintext TCP (--allow_insecure_tcp): anyone on "
               "the network path can read and replay them");
  }
  LogInfo("cbt-agent",
          "authorization: TCP callers need a grant (%zu policy grants, %zu bearer "
          "tokens); Unix-socket callers: %s",
          policy.grant_count(), tokens.size(), AccessName(policy.unix_access()));
  return std::make_unique<Authorizer>(std::move(policy), std::move(tokens));
}

absl::StatusOr<std::unique_ptr<PathGuard>> MakePathGuard(const AgentOptions& options,
                                                         blksnap::Kernel* fs) {
  PathGuardOptions guard;
  guard.device_globs = options.device_allow;
  guard.diff_storage_dirs = options.diff_storage_allow;
  if (guard.diff_storage_dirs.empty()) {
    const std::string dir = DefaultDiffStorageDir(options);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, absl::StrCat("cannot create the diff-storage directory ", dir),
                         absl::StatusCode::kUnavailable);
    }
    guard.diff_storage_dirs.push_back(dir);
  }
  auto paths = PathGuard::Create(fs, std::move(guard));
  if (!paths.ok()) return paths.status();
  LogInfo("cbt-agent", "device allowlist: %s; diff-storage allowlist: %s",
          (*paths)->device_globs().empty() ? "(none)"
                                           : absl::StrJoin((*paths)->device_globs(), " ").c_str(),
          absl::StrJoin((*paths)->diff_storage_dirs(), " ").c_str());
  return paths;
}

}  // namespace

std::string DefaultDiffStorageDir(const AgentOptions& options) {
  std::string dir = options.state_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return absl::StrCat(dir == "/" ? "" : dir, "/diff");
}

absl::StatusOr<SecuritySetup> SetUpSecurity(const AgentOptions& options) {
  SecuritySetup setup;
  auto authorizer = MakeAuthorizer(options);
  if (!authorizer.ok()) return authorizer.status();
  setup.authorizer = *std::move(authorizer);

  setup.file_system = options.blksnap_emulator_socket.empty()
                          ? blksnap::NewLinuxKernel()
                          : blksnap::NewRemoteKernel(options.blksnap_emulator_socket);
  auto paths = MakePathGuard(options, setup.file_system.get());
  if (!paths.ok()) return paths.status();
  setup.paths = *std::move(paths);

  setup.max_request_bytes = options.max_receive_message_bytes;
  setup.streams =
      std::make_unique<StreamLimiter>(options.max_concurrent_streams, options.max_stream_duration);
  LogInfo("cbt-agent", "limits: requests up to %u bytes, %u concurrent streams of at most %s",
          options.max_receive_message_bytes, options.max_concurrent_streams,
          absl::FormatDuration(options.max_stream_duration).c_str());
  return setup;
}

}  // namespace cbt::agent
