// Everything the daemon is configured with (from flags, see agent_main.cc).
#ifndef CBT_AGENT_SERVER_AGENT_OPTIONS_H_
#define CBT_AGENT_SERVER_AGENT_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace cbt::agent {

struct AgentOptions {
  std::vector<std::string> listen;  // "unix:/path" or "host:port"
  uint32_t socket_mode = 0660;
  std::string socket_group;
  std::string state_dir = "/var/lib/cbt-agent";
  std::string backend = "auto";          // auto | blksnap | ublk
  std::string blksnap_flavour = "auto";  // auto | lk6.15 | v7 | val7
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  bool allow_insecure_tcp = false;
  std::string metrics_listen;
  std::string health_listen;
  // Security (README "Security"; docs/RELIABILITY.md "Security").
  std::string authz_policy;      // authz_policy.h; empty: no grants, Unix callers write
  std::string auth_tokens_file;  // auth_tokens.h; empty: no bearer tokens
  std::vector<std::string> device_allow = {"/dev/*"};  // path_guard.h
  std::vector<std::string> diff_storage_allow;         // empty: <state_dir>/diff
  uint32_t max_receive_message_bytes = 4 * 1024 * 1024;
  uint32_t max_concurrent_streams = 128;
  absl::Duration max_stream_duration = absl::Minutes(10);
  // Testing only: send the blksnap backend's system calls to a blksnap-emulator process.
  std::string blksnap_emulator_socket;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_AGENT_OPTIONS_H_
