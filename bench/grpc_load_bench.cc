// Load generator for the agent's gRPC API.
//
// Serves the real AgentService with the blksnap backend over the in-process uapi emulator (so a
// kernel call costs about what an ioctl costs, not a socket hop), on a Unix socket, and drives it
// with N concurrent clients, each on its own connection:
//   - GetCbtInfo vs. a trivial Echo on the same server in the same run (throughput, p50, p99);
//   - streaming the whole CBT map of a device with 2,097,152 tracking blocks.
// usage: grpc_load_bench [--clients=N] [--seconds=S] [--map_runs=R]
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "blksnap/blksnap_backend.h"
#include "cbtagent/v1/agent.grpc.pb.h"
#include "tests/blksnap_emulator/emulated_kernel.h"
#include "server/agent_service.h"
#include "server/event_hub.h"
#include "server/metrics.h"
#include "state/state_store.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace v1 = ::cbtagent::v1;

// The backend owns its kernel; the bench keeps the emulator to set devices up.
class SharedKernel final : public cbt::blksnap::Kernel {
 public:
  explicit SharedKernel(cbt::blksnap::Kernel* k) : k_(k) {}
  int Open(const std::string& p, int f, int* fd) override { return k_->Open(p, f, fd); }
  int Close(int fd) override { return k_->Close(fd); }
  int Ioctl(int fd, unsigned long r, void* a) override { return k_->Ioctl(fd, r, a); }
  int Stat(const std::string& p, cbt::blksnap::FileStatus* s) override { return k_->Stat(p, s); }
  int RealPath(const std::string& p, std::string* r) override { return k_->RealPath(p, r); }
  int KernelRelease(std::string* r) override { return k_->KernelRelease(r); }

 private:
  cbt::blksnap::Kernel* k_;
};

struct PhaseResult {
  double calls_per_second = 0;
  double p50_us = 0;
  double p99_us = 0;
  uint64_t calls = 0;
  uint64_t failures = 0;
};

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1)));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

// Runs `clients` threads, each with its own channel, calling `call` until `seconds` pass.
template <typename Call>
PhaseResult RunPhase(const std::string& address, int clients, double seconds, Call call) {
  std::vector<std::vector<double>> latencies(clients);
  std::atomic<uint64_t> failures{0};
  std::vector<std::thread> threads;
  const auto stop_at = Clock::now() + std::chrono::duration<double>(seconds);
  const auto start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt("cbt.bench.client", c);  // a distinct argument: a connection of its own
      auto stub = v1::CbtAgent::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
      while (Clock::now() < stop_at) {
        const auto t0 = Clock::now();
        const bool ok = call(*stub);
        latencies[c].push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        if (!ok) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  PhaseResult r;
  r.calls = all.size();
  r.failures = failures;
  r.calls_per_second = all.size() / elapsed;
  r.p50_us = Percentile(all, 0.50);
  r.p99_us = Percentile(all, 0.99);
  return r;
}

int Flag(int argc, char** argv, const char* name, int fallback) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) return std::atoi(argv[i] + prefix.size());
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int clients = Flag(argc, argv, "clients", 8);
  const double seconds = Flag(argc, argv, "seconds", 5);
  const int map_runs = Flag(argc, argv, "map_runs", 20);

  char dir_template[] = "/tmp/cbt-grpc-bench.XXXXXX";
  const std::string dir = ::mkdtemp(dir_template);
  cbt::blksnap::emulator::EmulatorOptions options;
  options.backing_dir = dir;
  cbt::blksnap::emulator::EmulatedKernel kernel(options);
  // 2,097,152 blocks of 64 KiB: the largest map at the default tracking parameters.
  const uint64_t capacity = uint64_t{2097152} * 65536;
  if (!kernel.AddDevice("/dev/bench", capacity, 8, 16).ok()) return 1;

  auto state = cbt::agent::StateStore::Open(dir + "/state");
  cbt::agent::EventHub events;
  cbt::agent::Metrics metrics;
  auto backend = cbt::blksnap::NewBlksnapBackend(std::make_unique<SharedKernel>(&kernel), {},
                                                 &events, state->get());
  if (!backend.ok()) {
    std::fprintf(stderr, "backend: %s\n", backend.status().ToString().c_str());
    return 1;
  }
  cbt::agent::AgentService service(backend->get(), &events, &metrics,
                                   {"bench", "bench", ""});
  const std::string address = "unix:" + dir + "/agent.sock";
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();

  bool already = false;
  if (!(*backend)->AttachTracker("/dev/bench", &already).ok()) return 1;
  // Mark every 7th block so the map has content, then take a snapshot so it is readable.
  for (uint64_t block = 0; block < 2097152; block += 7) {
    std::string data(512, 'x');
    if (!kernel.WriteDevice("/dev/bench", block * 65536, data).ok()) return 1;
  }
  auto snapshot = (*backend)->CreateSnapshot({"/dev/bench"}, {dir, uint64_t{1} << 30});
  if (!snapshot.ok()) {
    std::fprintf(stderr, "snapshot: %s\n", snapshot.status().ToString().c_str());
    return 1;
  }

  auto echo = [](v1::CbtAgent::Stub& stub) {
    grpc::ClientContext context;
    v1::EchoRequest request;
    request.set_payload("0123456789abcdef");
    v1::EchoResponse response;
    return stub.Echo(&context, request, &response).ok();
  };
  auto info = [](v1::CbtAgent::Stub& stub) {
    grpc::ClientContext context;
    v1::GetCbtInfoRequest request;
    request.set_device("/dev/bench");
    v1::CbtInfo response;
    return stub.GetCbtInfo(&context, request, &response).ok() && response.block_count() == 2097152;
  };
  // Warm-up, then alternate the phases so drift affects both alike.
  RunPhase(address, clients, 1, echo);
  PhaseResult e1 = RunPhase(address, clients, seconds / 2, echo);
  PhaseResult i1 = RunPhase(address, clients, seconds / 2, info);
  PhaseResult e2 = RunPhase(address, clients, seconds / 2, echo);
  PhaseResult i2 = RunPhase(address, clients, seconds / 2, info);
  auto merge = [](const PhaseResult& a, const PhaseResult& b) {
    PhaseResult m;
    m.calls = a.calls + b.calls;
    m.failures = a.failures + b.failures;
    m.calls_per_second = (a.calls_per_second + b.calls_per_second) / 2;
    m.p50_us = (a.p50_us + b.p50_us) / 2;
    m.p99_us = std::max(a.p99_us, b.p99_us);
    return m;
  };
  const PhaseResult e = merge(e1, e2);
  const PhaseResult i = merge(i1, i2);

  auto stub = v1::CbtAgent::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  std::vector<double> map_ms;
  uint64_t map_bytes = 0;
  for (int run = 0; run < map_runs; ++run) {
    grpc::ClientContext context;
    v1::ReadCbtMapRequest request;
    request.set_device("/dev/bench");
    const auto t0 = Clock::now();
    auto reader = stub->ReadCbtMap(&context, request);
    v1::CbtMapChunk chunk;
    uint64_t bytes = 0;
    while (reader->Read(&chunk)) bytes += chunk.data().size();
    if (!reader->Finish().ok()) return 1;
    map_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    map_bytes = bytes;
  }
  const double map_p50 = Percentile(map_ms, 0.5);
  const double map_max = *std::max_element(map_ms.begin(), map_ms.end());

  std::printf("grpc load, %d clients, %.0f s per RPC, unix socket, in-process kernel emulator\n",
              clients, seconds);
  std::printf("%-12s %12s %10s %10s %10s %9s\n", "rpc", "calls/s", "p50 us", "p99 us", "calls",
              "failures");
  std::printf("%-12s %12.0f %10.1f %10.1f %10llu %9llu\n", "Echo", e.calls_per_second, e.p50_us,
              e.p99_us, (unsigned long long)e.calls, (unsigned long long)e.failures);
  std::printf("%-12s %12.0f %10.1f %10.1f %10llu %9llu\n", "GetCbtInfo", i.calls_per_second,
              i.p50_us, i.p99_us, (unsigned long long)i.calls, (unsigned long long)i.failures);
  std::printf("GetCbtInfo / Echo throughput: %.2f (target >= 0.80); GetCbtInfo p99 %.2f ms "
              "(target < 2 ms)\n", i.calls_per_second / e.calls_per_second, i.p99_us / 1000);
  std::printf("ReadCbtMap of %llu bytes: median %.2f ms, max %.2f ms over %d runs (target < 10 ms)\n",
              (unsigned long long)map_bytes, map_p50, map_max, map_runs);

  if (!(*backend)->ReleaseSnapshot(snapshot->id).ok()) return 1;
  server->Shutdown();
  (*backend)->Shutdown();
  std::string cleanup = "rm -rf " + dir;
  return std::system(cleanup.c_str()) == 0 && e.failures == 0 && i.failures == 0 ? 0 : 1;
}
