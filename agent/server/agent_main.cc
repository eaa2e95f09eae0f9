#include "server/agent_main.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/agent_options.h"
#include "server/agent_service.h"
#include "server/backend_gauges.h"
#include "server/backend_selection.h"
#include "server/event_hub.h"
#include "server/health_service.h"
#include "server/listeners.h"
#include "server/metrics.h"
#include "server/security_setup.h"
#include "state/state_store.h"

ABSL_FLAG(std::vector<std::string>, listen, {"unix:/run/cbt-agent/agent.sock"},
          "Where the API listens: unix:/path or host:port. Repeatable. TCP needs TLS unless "
          "--allow_insecure_tcp.");
ABSL_FLAG(std::string, socket_mode, "0660", "Octal permission bits of the Unix sockets.");
ABSL_FLAG(std::string, socket_group, "", "Group (name or gid) owning the Unix sockets.");
ABSL_FLAG(std::string, state_dir, "/var/lib/cbt-agent",
          "Directory where the agent remembers trackers and snapshots across restarts.");
ABSL_FLAG(std::string, backend, "auto", "auto, blksnap or ublk.");
ABSL_FLAG(std::string, blksnap_flavour, "auto",
          "Force the blksnap interface: auto, lk6.15, v7 or val7.");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate for TCP listeners.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for TCP listeners.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, TCP clients must present a certificate it signed (mTLS).");
ABSL_FLAG(bool, allow_insecure_tcp, false, "Allow TCP listeners without TLS.");
ABSL_FLAG(std::string, metrics_listen, "", "host:port for Prometheus metrics at /metrics.");
ABSL_FLAG(std::string, health_listen, "",
          "host:port of a plaintext listener that serves only grpc.health.v1 (for kubelet "
          "probes), keeping the API itself off the network.");
ABSL_FLAG(std::string, authz_policy, "",
          "Authorization policy file: 'grant read|write cert-cn:NAME|cert-san:NAME|token:NAME' "
          "and 'unix write|read|none' lines. TCP callers need a grant; Unix-socket callers get "
          "write unless the policy says otherwise.");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "Bearer tokens, one '<token> <name> read|write [expires=<RFC 3339>]' per line; the "
          "file must not be readable by others.");
ABSL_FLAG(std::vector<std::string>, device_allow, {"/dev/*"},
          "fnmatch pattern (FNM_PATHNAME) the resolved path of every device a request names must "
          "match; only block devices pass. Repeatable.");
ABSL_FLAG(std::vector<std::string>, diff_storage_allow, {},
          "Directory (or block device) under which snapshot diff storage must resolve. "
          "Repeatable; default <state_dir>/diff.");
ABSL_FLAG(uint32_t, max_receive_message_bytes, 4 * 1024 * 1024,
          "Largest request message accepted (bytes); larger ones get RESOURCE_EXHAUSTED.");
ABSL_FLAG(uint32_t, max_concurrent_streams, 128,
          "Server streams (WatchSnapshotEvents, ReadCbtMap, GetChangedExtents) open at once; "
          "more get RESOURCE_EXHAUSTED.");
ABSL_FLAG(absl::Duration, max_stream_duration, absl::Minutes(10),
          "How long a server stream may run before it ends with DEADLINE_EXCEEDED ('inf': no "
          "limit).");
ABSL_FLAG(std::string, blksnap_emulator_socket, "",
          "Testing only: send the blksnap backend's system calls to a blksnap-emulator.");

namespace cbt::agent {
namespace {

constexpr char kServiceName[] = "cbtagent.v1.CbtAgent";

void Log(const std::string& message) { std::fprintf(stderr, "cbt-agent: %s\n", message.c_str()); }

// absl keeps only the last value of a repeated flag; these are documented as repeatable, so
// every occurrence of each is folded into one comma-separated value first.
constexpr const char* kRepeatableFlags[] = {"listen", "device_allow", "diff_storage_allow"};

std::vector<char*> FoldRepeatedFlags(int argc, char** argv, std::vector<std::string>* folded) {
  std::vector<std::vector<std::string>> values(std::size(kRepeatableFlags));
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    bool taken = false;
    for (size_t f = 0; i > 0 && f < std::size(kRepeatableFlags) && !taken; ++f) {
      const std::string name = kRepeatableFlags[f];
      if ((arg == "--" + name || arg == "-" + name) && i + 1 < argc) {
        values[f].push_back(argv[++i]);
        taken = true;
      } else if (arg.rfind("--" + name + "=", 0) == 0 || arg.rfind("-" + name + "=", 0) == 0) {
        values[f].push_back(arg.substr(arg.find('=') + 1));
        taken = true;
      }
    }
    if (!taken) rest.push_back(argv[i]);
  }
  folded->reserve(std::size(kRepeatableFlags));  // no reallocation: rest points into it
  for (size_t f = 0; f < std::size(kRepeatableFlags); ++f) {
    if (values[f].empty()) continue;
    folded->push_back(absl::StrCat("--", kRepeatableFlags[f], "=", absl::StrJoin(values[f], ",")));
    rest.push_back(folded->back().data());
  }
  return rest;
}

absl::StatusOr<AgentOptions> OptionsFromFlags() {
  AgentOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  const std::string mode = absl::GetFlag(FLAGS_socket_mode);
  char* end = nullptr;
  const unsigned long parsed = std::strtoul(mode.c_str(), &end, 8);
  if (mode.empty() || *end != '\0' || parsed > 0777) {
    return absl::InvalidArgumentError(
        absl::StrCat("--socket_mode='", mode, "' is not octal permission bits like 0660"));
  }
  options.socket_mode = static_cast<uint32_t>(parsed);
  options.socket_group = absl::GetFlag(FLAGS_socket_group);
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.backend = absl::GetFlag(FLAGS_backend);
  options.blksnap_flavour = absl::GetFlag(FLAGS_blksnap_flavour);
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.allow_insecure_tcp = absl::GetFlag(FLAGS_allow_insecure_tcp);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.health_listen = absl::GetFlag(FLAGS_health_listen);
  options.blksnap_emulator_socket = absl::GetFlag(FLAGS_blksnap_emulator_socket);
  options.authz_policy = absl::GetFlag(FLAGS_authz_policy);
  options.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  options.device_allow = absl::GetFlag(FLAGS_device_allow);
  options.diff_storage_allow = absl::GetFlag(FLAGS_diff_storage_allow);
  options.max_receive_message_bytes = absl::GetFlag(FLAGS_max_receive_message_bytes);
  if (options.max_receive_message_bytes < 64 * 1024 ||
      options.max_receive_message_bytes > 1024 * 1024 * 1024) {
    return absl::InvalidArgumentError(
        "--max_receive_message_bytes must lie between 65536 and 1073741824");
  }
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  if (options.max_concurrent_streams == 0) {
    return absl::InvalidArgumentError("--max_concurrent_streams must be at least 1");
  }
  options.max_stream_duration = absl::GetFlag(FLAGS_max_stream_duration);
  if (options.max_stream_duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--max_stream_duration must be positive ('inf' for no limit)");
  }
  return options;
}

std::string KernelRelease() {
  struct utsname names;
  return ::uname(&names) == 0 ? names.release : "unknown";
}

int Fail(const absl::Status& status) {
  Log(absl::StrCat("cannot start: ", status.ToString()));
  return 1;
}

}  // namespace

int AgentMain(int argc, char** argv) {
  absl::FlagsUsageConfig usage;
  usage.version_string = [] { return std::string("cbt-agent " CBT_AGENT_VERSION "\n"); };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "cbt-agent: per-node gRPC agent for changed-block tracking and snapshots.");
  std::vector<std::string> folded;
  std::vector<char*> args = FoldRepeatedFlags(argc, argv, &folded);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  auto options = OptionsFromFlags();
  if (!options.ok()) return Fail(options.status());

  // Signals are taken synchronously by the main thread; every thread started from here on
  // inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto state = StateStore::Open(options->state_dir);
  if (!state.ok()) return Fail(state.status());
  // Before the backend starts: a security setting that is wrong stops the daemon right away.
  auto security = SetUpSecurity(*options);
  if (!security.ok()) return Fail(security.status());
  EventHub events;
  Metrics metrics;
  auto choice = SelectBackend(*options, &events, state->get());
  if (!choice.ok()) return Fail(choice.status());
  Backend& backend = *choice->backend;

  HealthState health;
  health.Set("", grpc::health::v1::HealthCheckResponse::SERVING);
  health.Set(kServiceName, choice->unavailable_reason.empty()
                               ? grpc::health::v1::HealthCheckResponse::SERVING
                               : grpc::health::v1::HealthCheckResponse::NOT_SERVING);

  // The health-only server is built before reflection is switched on, so that it serves
  // nothing but grpc.health.v1.
  std::unique_ptr<grpc::Server> health_server;
  HealthService probe_health(&health);
  if (!options->health_listen.empty()) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(options->health_listen, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&probe_health);
    health_server = builder.BuildAndStart();
    if (!health_server || port == 0) {
      return Fail(absl::UnavailableError(
          absl::StrCat("cannot listen on --health_listen=", options->health_listen)));
    }
  }

  auto listeners = PrepareListeners(*options);
  if (!listeners.ok()) return Fail(listeners.status());
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  AgentService service(&backend, &events, &metrics,
                       NodeFacts{CBT_AGENT_VERSION, KernelRelease(), choice->unavailable_reason},
                       security->safeguards());
  HealthService api_health(&health);
  grpc::ServerBuilder builder;
  std::vector<int> ports(listeners->size(), 0);
  for (size_t i = 0; i < listeners->size(); ++i) {
    builder.AddListeningPort((*listeners)[i].uri, (*listeners)[i].credentials, &ports[i]);
  }
  builder.RegisterService(&service);
  builder.RegisterService(&api_health);
  // gRPC's transport refuses larger messages before any handler sees them, and so without a
  // trace in the log. It gets twice the limit, so that a request over the limit is still
  // parsed, refused and logged by the handler (call_scope.h); only beyond twice the limit is
  // a request refused silently.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<uint64_t>(2ull * options->max_receive_message_bytes, INT32_MAX)));
  // Sockets are created with the configured mode from the start (no window with looser bits).
  const mode_t old_umask = ::umask(~options->socket_mode & 0777);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(old_umask);
  if (!server) {
    return Fail(absl::UnavailableError(
        absl::StrCat("cannot listen on ", absl::StrJoin(options->listen, ", "))));
  }
  for (size_t i = 0; i < listeners->size(); ++i) {
    if ((*listeners)[i].socket_path.empty() && ports[i] == 0) {
      return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", (*listeners)[i].uri)));
    }
  }
  if (auto s = SecureUnixSockets(*listeners, *options); !s.ok()) return Fail(s);

  std::unique_ptr<MetricsHttpServer> metrics_server;
  if (!options->metrics_listen.empty()) {
    metrics.SetGaugeSource([&backend] { return CollectBackendGauges(backend); });
    auto started = MetricsHttpServer::Start(options->metrics_listen, &metrics);
    if (!started.ok()) return Fail(started.status());
    metrics_server = std::move(*started);
  }

  Log(absl::StrCat("version ", CBT_AGENT_VERSION, ", backend: ",
                   choice->unavailable_reason.empty() ? backend.Describe().reason
                                                      : choice->unavailable_reason));
  for (size_t i = 0; i < listeners->size(); ++i) {
    const bool tcp = (*listeners)[i].socket_path.empty();
    Log(absl::StrCat("serving on ", (*listeners)[i].uri,
                     tcp ? absl::StrCat(" (port ", ports[i], ")") : ""));
  }
  if (health_server) Log(absl::StrCat("health checks on ", options->health_listen));
  if (metrics_server) Log(absl::StrCat("metrics on port ", metrics_server->port()));

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  Log(absl::StrCat("received ", strsignal(signal_number), ", stopping"));

  // Graceful stop: probes see NOT_SERVING, event streams end, in-flight calls get 10 s to
  // finish, then the backend's threads stop. Kernel objects are left as they are.
  health.Shutdown();
  events.Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (health_server) health_server->Shutdown(std::chrono::system_clock::now());
  metrics_server.reset();
  backend.Shutdown();
  Log("stopped");
  return 0;
}

}  // namespace cbt::agent
