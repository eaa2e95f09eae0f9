// Load test of the real daemon: 64 concurrent gRPC clients issue a weighted mix of RPCs for a
// bounded time while writes flow on four tracked devices of the blksnap uapi emulator (a process
// of its own, like a kernel). Asserts:
//   - 0 failed RPCs (any non-OK status) and 0 wrong answers;
//   - the daemon's RSS (VmRSS, sampled every 0.5 s) grows by at most a stated bound between the
//     end of the warm-up and the end of the load;
//   - the daemon is healthy afterwards (health SERVING, 4 trackers, no snapshot left, exits 0
//     on SIGTERM);
//   - the CBT is consistent: every snapshot cycle's changed extents cover every write that
//     finished before its take and started after the previous one, and a final snapshot's
//     extents since attach are exactly the blocks written or marked dirty during the run.
// Prints a summary table (calls, failures, p50/p99/max latency per RPC kind, RSS).
//
// Environment (all optional): CBT_LOAD_SECONDS (default 30), CBT_LOAD_CLIENTS (64, of which 4
// run snapshot cycles), CBT_LOAD_WARMUP_SECONDS (5), CBT_LOAD_RSS_BOUND_MIB (32),
// CBT_LOAD_WRITES_PER_SECOND (per device, default 200; 0: back to back), CBT_LOAD_CYCLE_MS
// (least time between the starts of two snapshot cycles of a device; default: the run spread
// over 200 cycles, 150 ms for 30 s).
#include <dirent.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_format.h"
#include "agent_harness.h"
#include "api_calls.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace cbt::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kDeviceBytes = 256 * kMiB;
constexpr int kDevices = 4;
// One WriteDevice message carries at most remote::kMaxPayload (64 KiB) of path + data; writes
// stay at or below 60 KiB so each is one message (applied atomically by the emulator).
constexpr uint64_t kMaxWrite = 60 * 1024;
// A device keeps its CBT generation for 254 snapshot takes (the 255th starts a new one, and
// every incremental base before it then needs a full backup). Cycles stop well short of that.
constexpr int kMaxCyclesPerDevice = 240;
constexpr int kDeadlineSeconds = 20;

int EnvInt(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::atoi(value) : fallback;
}

std::string DeviceName(int d) { return "/dev/load-" + std::to_string(d); }

enum Kind {
  kGetCbtInfo,
  kGetTracker,
  kListTrackers,
  kListSnapshots,
  kGetCapabilities,
  kReadCbtMap,
  kGetChangedExtents,
  kMarkDirty,
  kCreateSnapshot,
  kGetSnapshot,
  kReleaseSnapshot,
  kKinds
};
const char* const kKindNames[kKinds] = {"GetCbtInfo",        "GetTracker",      "ListTrackers",
                                        "ListSnapshots",     "GetCapabilities", "ReadCbtMap",
                                        "GetChangedExtents", "MarkDirty",       "CreateSnapshot",
                                        "GetSnapshot",       "ReleaseSnapshot"};

// The mix clients' weights (per cent). The snapshot cycle runs on dedicated clients.
struct Weighted {
  Kind kind;
  int weight;
};
constexpr Weighted kMix[] = {{kGetCbtInfo, 20},        {kGetTracker, 12},     {kListTrackers, 10},
                             {kListSnapshots, 10},     {kGetCapabilities, 8}, {kReadCbtMap, 15},
                             {kGetChangedExtents, 15}, {kMarkDirty, 10}};

int64_t NanosSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
}

std::unique_ptr<grpc::ClientContext> Context() { return Deadline(kDeadlineSeconds); }

// ---------------------------------------------------------------------------------------------
// Records

struct CallRecord {
  Kind kind;
  float micros;
};

struct Failure {
  Kind kind;
  std::string what;
};

// What one client thread saw; merged after the run.
struct ClientLog {
  std::vector<CallRecord> calls;
  std::vector<Failure> failures;  // non-OK status
  std::vector<Failure> wrong;     // OK but the answer is inconsistent
  // MarkDirty ranges that succeeded: (device, offset, length).
  std::vector<std::tuple<int, uint64_t, uint64_t>> marked;
};

struct WriteRecord {
  int64_t start_ns;  // since the load started
  int64_t end_ns;
  uint64_t offset;
  uint64_t length;
};

// One snapshot cycle: CreateSnapshot -> GetSnapshot -> GetChangedExtents -> ReleaseSnapshot.
struct CycleRecord {
  int64_t base_taken_ns;  // when the snapshot whose number is the base had been taken (returned)
  int64_t create_sent_ns;
  int64_t create_done_ns;
  uint32_t base_number;
  uint32_t number;
  std::vector<uint8_t> changed;  // per tracking block: 1 when inside a returned extent
};

struct DeviceInfo {
  std::string path;
  std::string generation;
  uint32_t changes_number = 0;
  uint64_t block_size = 0;
  uint64_t block_count = 0;
};

void MarkBlocks(std::vector<uint8_t>* blocks, uint64_t block_size, uint64_t offset,
                uint64_t length) {
  if (length == 0) return;
  const uint64_t first = offset / block_size;
  const uint64_t last = (offset + length - 1) / block_size;
  for (uint64_t b = first; b <= last && b < blocks->size(); ++b) (*blocks)[b] = 1;
}

// ---------------------------------------------------------------------------------------------
// The daemon's process

// The pid of the process listening on a Unix socket (SO_PEERCRED of a connection to it).
pid_t ListenerPid(const std::string& socket_path, int type = SOCK_STREAM) {
  const int fd = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", socket_path.c_str());
  pid_t pid = -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    ucred credentials{};
    socklen_t length = sizeof(credentials);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0) {
      pid = credentials.pid;
    }
  }
  ::close(fd);
  return pid;
}

struct ProcessSample {
  double t_seconds;  // since the load started (negative: before)
  uint64_t rss_kib;
  int threads;
  int fds;
};

ProcessSample SampleProcess(pid_t pid, double t_seconds) {
  ProcessSample sample{t_seconds, 0, 0, 0};
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) sample.rss_kib = std::strtoull(line.c_str() + 6, nullptr, 10);
    if (line.rfind("Threads:", 0) == 0) sample.threads = std::atoi(line.c_str() + 8);
  }
  if (DIR* dir = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] != '.') ++sample.fds;
    }
    ::closedir(dir);
  }
  return sample;
}

// User + system CPU time of a process, in seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  return double(utime + stime) / ::sysconf(_SC_CLK_TCK);
}

std::string ProcessCommandLine(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(text.begin(), text.end(), '\0', ' ');
  return text;
}

// ---------------------------------------------------------------------------------------------
// Latency summary

struct Summary {
  uint64_t calls = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
};

Summary Summarize(std::vector<float> micros) {
  Summary s;
  s.calls = micros.size();
  if (micros.empty()) return s;
  std::sort(micros.begin(), micros.end());
  auto at = [&](double p) {
    const size_t k =
        std::min(micros.size() - 1, static_cast<size_t>(p * (micros.size() - 1) + 0.5));
    return micros[k] / 1000.0;
  };
  s.p50_ms = at(0.50);
  s.p99_ms = at(0.99);
  s.max_ms = micros.back() / 1000.0;
  return s;
}

// ---------------------------------------------------------------------------------------------

class LoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setup_start_ = Clock::now();
    std::vector<EmulatedDevice> devices;
    for (int d = 0; d < kDevices; ++d) {
      devices.push_back({DeviceName(d), kDeviceBytes, 8, static_cast<uint32_t>(16 * (d + 1))});
    }
    harness_ = std::make_unique<AgentHarness>("lk6.15", "6.15.0", devices);
    BackDevicesWithMemory();
    ASSERT_TRUE(harness_->StartEmulator());
    ASSERT_TRUE(harness_->StartAgent()) << harness_->AgentLog();
  }

  // The emulator keeps each device in an unlinked file under <work dir>/backing. On a disk,
  // the page cache of what the writers wrote expires after 30 s (vm.dirty_expire_centisecs),
  // i.e. just as the load ends, and the emulator's exit then waits for its writeback: 15-40 s
  // on a busy shared disk. The devices live in /dev/shm instead when it has room for all of
  // them (the harness's directory becomes a symlink there).
  void BackDevicesWithMemory() {
    struct statvfs shm {};
    if (::statvfs("/dev/shm", &shm) != 0 ||
        uint64_t(shm.f_bavail) * shm.f_frsize < kDevices * kDeviceBytes + 256 * kMiB) {
      backing_ = "disk (/dev/shm too small)";
      return;
    }
    char pattern[] = "/dev/shm/cbt-load.XXXXXX";
    if (::mkdtemp(pattern) == nullptr) return;
    const std::string backing = harness_->work_dir() + "/backing";
    if (::rmdir(backing.c_str()) != 0 || ::symlink(pattern, backing.c_str()) != 0) {
      ::rmdir(pattern);
      ::mkdir(backing.c_str(), 0700);
      backing_ = "disk";
      return;
    }
    shm_dir_ = pattern;
    backing_ = "memory (" + shm_dir_ + ")";
  }

  void TearDown() override {
    const auto start = Clock::now();
    harness_.reset();  // kills the daemon and the emulator, removes the work directory
    if (!shm_dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(shm_dir_, ignored);
    }
    std::printf("teardown (wall): %.1f s\n",
                std::chrono::duration<double>(Clock::now() - start).count());
  }

  // Wall time of each phase, printed at the end.
  void Phase(const char* name) {
    const auto now = Clock::now();
    phases_ += absl::StrFormat(" %s %.1f s,", name,
                               std::chrono::duration<double>(now - setup_start_).count());
    setup_start_ = now;
  }

  std::unique_ptr<AgentHarness> harness_;
  Clock::time_point setup_start_;
  std::string backing_ = "disk";
  std::string shm_dir_;
  std::string phases_;
};

// Under AddressSanitizer the daemon (built with the test) keeps freed memory in its quarantine,
// up to 256 MiB by default: its RSS then grows with the number of calls, not with leaks, so the
// bound is checked in the normal build only. LeakSanitizer checks the daemon's exit there.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kRssBoundApplies = false;
#else
constexpr bool kRssBoundApplies = true;
#endif

TEST_F(LoadTest, SixtyFourClientsMixedRpcsWhileWriting) {
  AgentHarness& h = *harness_;
  const int seconds = std::max(1, EnvInt("CBT_LOAD_SECONDS", 30));
  const int clients = std::max(kDevices + 1, EnvInt("CBT_LOAD_CLIENTS", 64));
  const int warmup_seconds = std::min(seconds - 1, EnvInt("CBT_LOAD_WARMUP_SECONDS", 5));
  const uint64_t rss_bound_kib = uint64_t(EnvInt("CBT_LOAD_RSS_BOUND_MIB", 32)) * 1024;
  const int writes_per_second = std::max(0, EnvInt("CBT_LOAD_WRITES_PER_SECOND", 200));
  const int cycle_clients = kDevices;
  const int mix_clients = clients - cycle_clients;
  // Spread the cycles over the run but never past the generation's 254 takes.
  const auto cycle_interval = std::chrono::milliseconds(std::max<int64_t>(
      {20, int64_t(seconds) * 1000 / (kMaxCyclesPerDevice - 40), EnvInt("CBT_LOAD_CYCLE_MS", 0)}));

  const pid_t agent_pid = ListenerPid(h.agent_socket());
  ASSERT_GT(agent_pid, 0);
  ASSERT_NE(ProcessCommandLine(agent_pid).find(h.state_dir()), std::string::npos)
      << "pid " << agent_pid << " is not this test's daemon: " << ProcessCommandLine(agent_pid);
  // SOCK_SEQPACKET: the emulator's socket type.
  const pid_t emulator_pid = ListenerPid(h.kernel_socket(), SOCK_SEQPACKET);

  // Trackers, and the base every check refers to: (generation, changes number) at attach.
  std::vector<DeviceInfo> devices(kDevices);
  for (int d = 0; d < kDevices; ++d) {
    devices[d].path = DeviceName(d);
    Attach(h, devices[d].path);
    const v1::CbtInfo info = Info(h, devices[d].path);
    devices[d].generation = info.generation_id();
    devices[d].changes_number = info.changes_number();
    devices[d].block_size = info.block_size();
    devices[d].block_count = info.block_count();
    ASSERT_GT(devices[d].block_size, 0u);
    ASSERT_EQ(devices[d].block_count * devices[d].block_size, kDeviceBytes);
  }
  if (HasFailure()) return;

  Phase("setup");
  std::atomic<bool> stop{false};
  const double agent_cpu_start = CpuSeconds(agent_pid);
  const double emulator_cpu_start = emulator_pid > 0 ? CpuSeconds(emulator_pid) : 0;
  const auto t0 = Clock::now();
  const auto stop_at = t0 + std::chrono::seconds(seconds);

  // RSS sampler.
  std::vector<ProcessSample> samples;
  samples.push_back(SampleProcess(agent_pid, 0.0));  // idle, after setup
  std::thread sampler([&] {
    auto next = t0 + std::chrono::milliseconds(500);
    while (!stop.load()) {
      std::this_thread::sleep_until(next);
      samples.push_back(SampleProcess(agent_pid, NanosSince(t0) / 1e9));
      next += std::chrono::milliseconds(500);
    }
  });

  // Writers: one per device, each on its own emulator connection, paced at
  // `writes_per_second` (a writer that falls behind catches up without sleeping).
  std::vector<std::vector<WriteRecord>> writes(kDevices);
  std::vector<std::string> write_errors(kDevices);
  std::vector<std::thread> writers;
  for (int d = 0; d < kDevices; ++d) {
    writers.emplace_back([&, d] {
      auto kernel = blksnap::emulator::EmulatorClient::Connect(h.kernel_socket());
      if (!kernel.ok()) {
        write_errors[d] = kernel.status().ToString();
        return;
      }
      std::mt19937_64 random(1000 + d);
      const std::string data = Pattern(kMaxWrite, 77 + d);
      const auto period =
          std::chrono::nanoseconds(writes_per_second > 0 ? 1000000000 / writes_per_second : 0);
      auto next = t0;
      while (!stop.load()) {
        if (writes_per_second > 0) {
          std::this_thread::sleep_until(next);
          next += period;
        }
        // Mostly small writes (512 B to 8 KiB), one in ten up to 60 KiB, sector-aligned so
        // that some straddle two tracking blocks; four in five go to a hot first eighth of
        // the device, the rest anywhere (so part of the map stays clean for the final check).
        // Small writes keep the data volume (page cache the emulator's backing files hold
        // until teardown) low.
        const uint64_t length = random() % 10 == 0 ? 4096 * (1 + random() % (kMaxWrite / 4096))
                                                   : 512 * (1 + random() % 16);
        const uint64_t span = random() % 5 != 0 ? kDeviceBytes / 8 : kDeviceBytes;
        const uint64_t offset = 512 * (random() % ((span - length) / 512 + 1));
        WriteRecord record{NanosSince(t0), 0, offset, length};
        absl::Status status = kernel->WriteDevice(DeviceName(d), offset, data.substr(0, length));
        record.end_ns = NanosSince(t0);
        if (!status.ok()) {
          write_errors[d] = status.ToString();
          return;
        }
        writes[d].push_back(record);
      }
    });
  }

  std::vector<ClientLog> logs(clients);
  std::vector<std::vector<CycleRecord>> cycles(kDevices);

  auto make_stub = [&](int c) {
    grpc::ChannelArguments args;
    args.SetInt("cbt.load.client", c);  // a distinct argument: a connection of its own
    return v1::CbtAgent::NewStub(grpc::CreateCustomChannel(
        "unix:" + h.agent_socket(), grpc::InsecureChannelCredentials(), args));
  };

  // Runs one call, timing it and recording a non-OK status.
  auto timed = [&](ClientLog& log, Kind kind, auto&& call) -> grpc::Status {
    const auto start = Clock::now();
    grpc::Status status = call();
    log.calls.push_back(
        {kind, std::chrono::duration<float, std::micro>(Clock::now() - start).count()});
    if (!status.ok()) {
      log.failures.push_back(
          {kind, std::to_string(status.error_code()) + ": " + status.error_message()});
    }
    return status;
  };
  auto wrong = [](ClientLog& log, Kind kind, const std::string& what) {
    log.wrong.push_back({kind, what});
  };

  // Streams GetChangedExtents; on success fills `extents` and the final chunk.
  auto changed_extents = [&](v1::CbtAgent::Stub& stub, const std::string& device,
                             const std::string& generation, uint32_t number,
                             std::vector<std::pair<uint64_t, uint64_t>>* extents,
                             v1::ChangedExtentsChunk* last) {
    v1::GetChangedExtentsRequest request;
    request.set_device(device);
    request.set_base_generation_id(generation);
    request.set_base_changes_number(number);
    auto context = Context();
    auto reader = stub.GetChangedExtents(context.get(), request);
    v1::ChangedExtentsChunk chunk;
    while (reader->Read(&chunk)) {
      for (const auto& e : chunk.extents()) extents->push_back({e.offset(), e.length()});
      *last = chunk;
    }
    return reader->Finish();
  };

  // Mix clients.
  auto mix_client = [&](int c) {
    ClientLog& log = logs[c];
    auto stub = make_stub(c);
    std::mt19937_64 random(c);
    int total_weight = 0;
    for (const Weighted& w : kMix) total_weight += w.weight;
    while (Clock::now() < stop_at) {
      int pick = static_cast<int>(random() % total_weight);
      Kind kind = kMix[0].kind;
      for (const Weighted& w : kMix) {
        if (pick < w.weight) {
          kind = w.kind;
          break;
        }
        pick -= w.weight;
      }
      const int d = static_cast<int>(random() % kDevices);
      const DeviceInfo& dev = devices[d];
      switch (kind) {
        case kGetCbtInfo: {
          v1::GetCbtInfoRequest request;
          request.set_device(dev.path);
          v1::CbtInfo response;
          if (timed(log, kind,
                    [&] { return stub->GetCbtInfo(Context().get(), request, &response); })
                  .ok() &&
              (response.generation_id() != dev.generation ||
               response.block_count() != dev.block_count)) {
            wrong(log, kind, dev.path + ": generation or block count changed");
          }
          break;
        }
        case kGetTracker: {
          v1::GetTrackerRequest request;
          request.set_device(dev.path);
          v1::Tracker response;
          if (timed(log, kind,
                    [&] { return stub->GetTracker(Context().get(), request, &response); })
                  .ok() &&
              (response.resolved_path() != dev.path || response.capacity_bytes() != kDeviceBytes)) {
            wrong(log, kind, dev.path + ": tracker " + response.ShortDebugString());
          }
          break;
        }
        case kListTrackers: {
          v1::ListTrackersResponse response;
          if (timed(log, kind, [&] { return stub->ListTrackers(Context().get(), {}, &response); })
                  .ok() &&
              response.trackers_size() != kDevices) {
            wrong(log, kind, std::to_string(response.trackers_size()) + " trackers");
          }
          break;
        }
        case kListSnapshots: {
          v1::ListSnapshotsResponse response;
          if (timed(log, kind, [&] { return stub->ListSnapshots(Context().get(), {}, &response); })
                  .ok() &&
              response.snapshots_size() > kDevices) {
            wrong(log, kind, std::to_string(response.snapshots_size()) + " snapshots");
          }
          break;
        }
        case kGetCapabilities: {
          v1::Capabilities response;
          if (timed(log, kind,
                    [&] { return stub->GetCapabilities(Context().get(), {}, &response); })
                  .ok() &&
              response.backend() != v1::BACKEND_KIND_BLKSNAP) {
            wrong(log, kind, "backend " + std::to_string(response.backend()));
          }
          break;
        }
        case kReadCbtMap: {
          v1::ReadCbtMapRequest request;
          request.set_device(dev.path);  // offset 0, length 0: the whole map
          uint64_t bytes = 0;
          bool contiguous = true;
          if (timed(log, kind,
                    [&] {
                      auto context = Context();
                      auto reader = stub->ReadCbtMap(context.get(), request);
                      v1::CbtMapChunk chunk;
                      while (reader->Read(&chunk)) {
                        contiguous = contiguous && chunk.offset() == bytes &&
                                     chunk.total_length() == dev.block_count;
                        bytes += chunk.data().size();
                      }
                      return reader->Finish();
                    })
                  .ok() &&
              (!contiguous || bytes != dev.block_count)) {
            wrong(log, kind, dev.path + ": map of " + std::to_string(bytes) + " bytes");
          }
          break;
        }
        case kGetChangedExtents: {
          std::vector<std::pair<uint64_t, uint64_t>> extents;
          v1::ChangedExtentsChunk last;
          if (timed(log, kind,
                    [&] {
                      return changed_extents(*stub, dev.path, dev.generation, dev.changes_number,
                                             &extents, &last);
                    })
                  .ok() &&
              (!last.complete() || last.generation_id() != dev.generation)) {
            wrong(log, kind, dev.path + ": incomplete or another generation");
          }
          break;
        }
        case kMarkDirty: {
          v1::MarkDirtyRequest request;
          request.set_device(dev.path);
          const int ranges = 1 + static_cast<int>(random() % 2);
          for (int r = 0; r < ranges; ++r) {
            const uint64_t length = 512 * (1 + random() % 64);  // up to 32 KiB
            const uint64_t offset = 512 * (random() % ((kDeviceBytes - length) / 512 + 1));
            auto* range = request.add_ranges();
            range->set_offset(offset);
            range->set_length(length);
          }
          v1::MarkDirtyResponse response;
          if (timed(log, kind, [&] {
                return stub->MarkDirty(Context().get(), request, &response);
              }).ok()) {
            for (const auto& range : request.ranges()) {
              log.marked.emplace_back(d, range.offset(), range.length());
            }
          }
          break;
        }
        default:
          break;
      }
    }
  };

  // Snapshot-cycle clients: client `d` owns device `d`, so no device is ever asked for a second
  // snapshot while in one. Each cycle's incremental is based on the previous cycle's numbers.
  auto cycle_client = [&](int c, int d) {
    ClientLog& log = logs[c];
    auto stub = make_stub(c);
    const DeviceInfo& dev = devices[d];
    std::string base_generation = dev.generation;
    uint32_t base_number = dev.changes_number;
    int64_t base_taken_ns = 0;  // the load starts after the attach-time numbers were read
    auto next = Clock::now();
    while (Clock::now() < stop_at && static_cast<int>(cycles[d].size()) < kMaxCyclesPerDevice) {
      std::this_thread::sleep_until(std::min(next, stop_at));
      if (Clock::now() >= stop_at) break;
      next += cycle_interval;
      CycleRecord cycle;
      cycle.base_taken_ns = base_taken_ns;
      cycle.base_number = base_number;
      v1::CreateSnapshotRequest create;
      create.add_devices(dev.path);
      create.mutable_diff_storage()->set_path(h.diff_dir());
      // Room for every chunk of the device plus the module's reserved area: never overflows.
      create.mutable_diff_storage()->set_limit_bytes(4 * kDeviceBytes);
      v1::CreateSnapshotResponse created;
      cycle.create_sent_ns = NanosSince(t0);
      const bool ok = timed(log, kCreateSnapshot, [&] {
                        return stub->CreateSnapshot(Context().get(), create, &created);
                      }).ok();
      cycle.create_done_ns = NanosSince(t0);
      if (!ok) continue;
      const std::string id = created.snapshot().id();

      v1::GetSnapshotRequest get;
      get.set_snapshot_id(id);
      v1::Snapshot snapshot;
      if (timed(log, kGetSnapshot,
                [&] { return stub->GetSnapshot(Context().get(), get, &snapshot); })
              .ok() &&
          (snapshot.state() != v1::SNAPSHOT_STATE_ACTIVE || snapshot.devices_size() != 1 ||
           snapshot.devices(0).resolved_path() != dev.path ||
           snapshot.devices(0).image_path().empty())) {
        wrong(log, kGetSnapshot, id + ": " + snapshot.ShortDebugString());
      }

      std::vector<std::pair<uint64_t, uint64_t>> extents;
      v1::ChangedExtentsChunk last;
      if (timed(log, kGetChangedExtents, [&] {
            return changed_extents(*stub, dev.path, base_generation, base_number, &extents, &last);
          }).ok()) {
        if (!last.complete() || last.generation_id() != base_generation ||
            last.changes_number() != base_number + 1) {
          wrong(log, kGetChangedExtents,
                dev.path + ": cycle after number " + std::to_string(base_number) + " got " +
                    last.generation_id() + "/" + std::to_string(last.changes_number()));
        } else {
          cycle.number = last.changes_number();
          cycle.changed.assign(dev.block_count, 0);
          for (auto [offset, length] : extents) {
            MarkBlocks(&cycle.changed, dev.block_size, offset, length);
          }
          cycles[d].push_back(std::move(cycle));
          base_number = last.changes_number();
          base_taken_ns = cycles[d].back().create_done_ns;
        }
      }

      v1::ReleaseSnapshotRequest release;
      release.set_snapshot_id(id);
      v1::ReleaseSnapshotResponse released;
      timed(log, kReleaseSnapshot,
            [&] { return stub->ReleaseSnapshot(Context().get(), release, &released); });
    }
  };

  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    if (c < cycle_clients) {
      threads.emplace_back(cycle_client, c, c);
    } else {
      threads.emplace_back(mix_client, c);
    }
  }
  for (auto& t : threads) t.join();
  const double load_seconds = NanosSince(t0) / 1e9;
  stop = true;
  for (auto& t : writers) t.join();
  sampler.join();
  const double agent_cpu = CpuSeconds(agent_pid) - agent_cpu_start;
  const double emulator_cpu = emulator_pid > 0 ? CpuSeconds(emulator_pid) - emulator_cpu_start : 0;
  Phase("load");
  // "End" is the last sample taken while the load still ran (clients still connected).
  ProcessSample end_sample = samples.back();
  for (const ProcessSample& s : samples) {
    if (s.t_seconds <= seconds) end_sample = s;
  }
  samples.push_back(SampleProcess(agent_pid, load_seconds));  // clients gone, writers stopped

  for (int d = 0; d < kDevices; ++d) {
    EXPECT_EQ(write_errors[d], "") << "writer of " << DeviceName(d);
  }

  // --- Final CBT state: one last snapshot per device; its extents since attach must be exactly
  // the blocks written or marked dirty during the run.
  std::vector<std::vector<uint8_t>> expected(kDevices);
  for (int d = 0; d < kDevices; ++d) {
    expected[d].assign(devices[d].block_count, 0);
    for (const WriteRecord& w : writes[d]) {
      MarkBlocks(&expected[d], devices[d].block_size, w.offset, w.length);
    }
  }
  uint64_t marked_ranges = 0;
  for (const ClientLog& log : logs) {
    for (auto [d, offset, length] : log.marked) {
      MarkBlocks(&expected[d], devices[d].block_size, offset, length);
      ++marked_ranges;
    }
  }
  std::vector<uint64_t> final_changed_blocks(kDevices, 0), expected_blocks(kDevices, 0);
  std::vector<uint32_t> final_numbers(kDevices, 0);
  for (int d = 0; d < kDevices; ++d) {
    const DeviceInfo& dev = devices[d];
    v1::Snapshot last_snapshot = CreateSnapshot(h, {dev.path}, 4 * kDeviceBytes);
    ExtentsResult result = Extents(h, dev.path, dev.generation, dev.changes_number);
    if (!result.status.ok()) {
      ADD_FAILURE() << dev.path << ": " << result.status.error_message();
      Release(h, last_snapshot.id());
      continue;
    }
    EXPECT_TRUE(result.last.complete());
    EXPECT_EQ(result.last.generation_id(), dev.generation) << "the generation held";
    final_numbers[d] = result.last.changes_number();
    EXPECT_EQ(final_numbers[d], dev.changes_number + cycles[d].size() + 1)
        << dev.path << ": one take per cycle plus the last one";
    std::vector<uint8_t> changed(dev.block_count, 0);
    for (auto [offset, length] : result.extents) {
      MarkBlocks(&changed, dev.block_size, offset, length);
    }
    uint64_t missed = 0, extra = 0;
    for (uint64_t b = 0; b < dev.block_count; ++b) {
      missed += expected[d][b] && !changed[b];
      extra += changed[b] && !expected[d][b];
      final_changed_blocks[d] += changed[b];
      expected_blocks[d] += expected[d][b];
    }
    EXPECT_EQ(missed, 0u) << dev.path << ": blocks written or marked but not in the extents";
    EXPECT_EQ(extra, 0u) << dev.path << ": blocks in the extents never written or marked";
    Release(h, last_snapshot.id());
  }

  Phase("final snapshots");
  // --- Every cycle's incremental covers every write that ended before its CreateSnapshot was
  // sent and started after the snapshot it is based on had been taken.
  uint64_t cycle_checks = 0, cycle_misses = 0;
  std::string first_miss;
  for (int d = 0; d < kDevices; ++d) {
    for (const CycleRecord& cycle : cycles[d]) {
      for (const WriteRecord& w : writes[d]) {
        if (w.start_ns < cycle.base_taken_ns || w.end_ns > cycle.create_sent_ns) continue;
        ++cycle_checks;
        const uint64_t first = w.offset / devices[d].block_size;
        const uint64_t last = (w.offset + w.length - 1) / devices[d].block_size;
        for (uint64_t b = first; b <= last; ++b) {
          if (!cycle.changed[b]) {
            if (cycle_misses++ == 0) {
              first_miss = DeviceName(d) + " block " + std::to_string(b) + " of the cycle to " +
                           std::to_string(cycle.number);
            }
            break;
          }
        }
      }
    }
  }
  EXPECT_EQ(cycle_misses, 0u) << "writes missing from a cycle's changed extents, first: "
                              << first_miss;

  // --- Healthy afterwards.
  EXPECT_EQ(h.agent_process().ExitedStatus(), -1) << "the daemon exited\n" << h.AgentLog();
  {
    auto health = grpc::health::v1::Health::NewStub(h.channel());
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("cbtagent.v1.CbtAgent");
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(Deadline(10).get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    v1::ListSnapshotsResponse snapshots;
    EXPECT_TRUE(h.agent().ListSnapshots(Deadline(10).get(), {}, &snapshots).ok());
    EXPECT_EQ(snapshots.snapshots_size(), 0) << "no snapshot left behind";
    v1::ListTrackersResponse trackers;
    EXPECT_TRUE(h.agent().ListTrackers(Deadline(10).get(), {}, &trackers).ok());
    EXPECT_EQ(trackers.trackers_size(), kDevices);
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));  // let closed connections go
  const ProcessSample after_sample = SampleProcess(agent_pid, NanosSince(t0) / 1e9);

  Phase("cycle checks and health");
  // --- Summary.
  std::vector<std::vector<float>> per_kind(kKinds);
  std::vector<float> all;
  std::vector<uint64_t> failures(kKinds, 0), wrongs(kKinds, 0);
  std::vector<std::string> first_failures;
  for (const ClientLog& log : logs) {
    for (const CallRecord& r : log.calls) {
      per_kind[r.kind].push_back(r.micros);
      all.push_back(r.micros);
    }
    for (const Failure& f : log.failures) {
      ++failures[f.kind];
      if (first_failures.size() < 10)
        first_failures.push_back(std::string(kKindNames[f.kind]) + ": " + f.what);
    }
    for (const Failure& f : log.wrong) {
      ++wrongs[f.kind];
      if (first_failures.size() < 10)
        first_failures.push_back(std::string(kKindNames[f.kind]) + " (wrong answer): " + f.what);
    }
  }
  uint64_t total_failures = 0, total_wrong = 0;
  for (int k = 0; k < kKinds; ++k) {
    total_failures += failures[k];
    total_wrong += wrongs[k];
  }

  // RSS: at the end of the warm-up, the peak during the load, at its end.
  uint64_t warm_rss = 0, peak_rss = 0;
  int peak_threads = 0, peak_fds = 0;
  for (const ProcessSample& s : samples) {
    if (warm_rss == 0 && s.t_seconds >= warmup_seconds) warm_rss = s.rss_kib;
    peak_rss = std::max(peak_rss, s.rss_kib);
    peak_threads = std::max(peak_threads, s.threads);
    peak_fds = std::max(peak_fds, s.fds);
  }
  if (warm_rss == 0) warm_rss = end_sample.rss_kib;
  const int64_t growth_kib = int64_t(end_sample.rss_kib) - int64_t(warm_rss);

  uint64_t total_writes = 0, written_bytes = 0;
  for (const auto& w : writes) {
    total_writes += w.size();
    for (const WriteRecord& r : w) written_bytes += r.length;
  }
  size_t total_cycles = 0;
  for (const auto& c : cycles) total_cycles += c.size();

  std::printf(
      "\n=== load: %d clients (%d mix, %d snapshot-cycle), %.1f s, %d devices x %llu MiB "
      "backed by %s, each client on its own connection ===\n",
      clients, mix_clients, cycle_clients, load_seconds, kDevices,
      (unsigned long long)(kDeviceBytes / kMiB), backing_.c_str());
  std::printf("%-18s %9s %8s %6s %9s %9s %9s %9s\n", "rpc", "calls", "calls/s", "fail", "p50 ms",
              "p99 ms", "max ms", "wrong");
  for (int k = 0; k < kKinds; ++k) {
    const Summary s = Summarize(per_kind[k]);
    std::printf("%-18s %9llu %8.0f %6llu %9.2f %9.2f %9.2f %9llu\n", kKindNames[k],
                (unsigned long long)s.calls, s.calls / load_seconds,
                (unsigned long long)failures[k], s.p50_ms, s.p99_ms, s.max_ms,
                (unsigned long long)wrongs[k]);
  }
  const Summary total = Summarize(all);
  std::printf("%-18s %9llu %8.0f %6llu %9.2f %9.2f %9.2f %9llu\n", "all",
              (unsigned long long)total.calls, total.calls / load_seconds,
              (unsigned long long)total_failures, total.p50_ms, total.p99_ms, total.max_ms,
              (unsigned long long)total_wrong);
  std::printf(
      "snapshot cycles: %zu (%zu %zu %zu %zu per device, interval %lld ms); final changes "
      "numbers %u %u %u %u\n",
      total_cycles, cycles[0].size(), cycles[1].size(), cycles[2].size(), cycles[3].size(),
      (long long)cycle_interval.count(), final_numbers[0], final_numbers[1], final_numbers[2],
      final_numbers[3]);
  std::printf(
      "writes: %llu (%.0f/s, %.1f MiB/s, target %d/s per device); MarkDirty ranges: %llu; cycle "
      "coverage checks: "
      "%llu write-in-cycle pairs, %llu missed\n",
      (unsigned long long)total_writes, total_writes / load_seconds,
      written_bytes / load_seconds / kMiB, writes_per_second, (unsigned long long)marked_ranges,
      (unsigned long long)cycle_checks, (unsigned long long)cycle_misses);
  std::printf("final extents since attach (blocks): ");
  for (int d = 0; d < kDevices; ++d) {
    std::printf("%s%llu/%llu", d ? ", " : "", (unsigned long long)final_changed_blocks[d],
                (unsigned long long)expected_blocks[d]);
  }
  std::printf(" changed/expected of %llu\n", (unsigned long long)devices[0].block_count);
  std::printf(
      "daemon pid %d RSS (MiB): start %.1f, after warm-up (%d s) %.1f, peak %.1f, end of "
      "load (%.1f s) %.1f (growth %+.1f, bound %.0f), after checks %.1f\n",
      agent_pid, samples.front().rss_kib / 1024.0, warmup_seconds, warm_rss / 1024.0,
      peak_rss / 1024.0, end_sample.t_seconds, end_sample.rss_kib / 1024.0, growth_kib / 1024.0,
      rss_bound_kib / 1024.0, after_sample.rss_kib / 1024.0);
  std::printf(
      "daemon threads start %d peak %d end of load %d after checks %d; fds start %d "
      "peak %d end of load %d after checks %d\n",
      samples.front().threads, peak_threads, end_sample.threads, after_sample.threads,
      samples.front().fds, peak_fds, end_sample.fds, after_sample.fds);
  std::printf(
      "CPU during the load: daemon %.1f s (%.0f%% of one CPU), emulator %.1f s (%.0f%%); "
      "%ld CPUs online; load average at the end: %s\n",
      agent_cpu, 100 * agent_cpu / load_seconds, emulator_cpu, 100 * emulator_cpu / load_seconds,
      ::sysconf(_SC_NPROCESSORS_ONLN),
      [] {
        std::ifstream in("/proc/loadavg");
        std::string line;
        std::getline(in, line);
        return line;
      }()
          .c_str());
  std::printf("RSS samples (s:MiB):");
  for (size_t i = 0; i < samples.size(); i += 4) {
    std::printf(" %.1f:%.1f", samples[i].t_seconds, samples[i].rss_kib / 1024.0);
  }
  std::printf("\n");
  for (const std::string& f : first_failures) std::printf("  failure: %s\n", f.c_str());
  std::fflush(stdout);

  EXPECT_EQ(total_failures, 0u) << "failed RPCs";
  EXPECT_EQ(total_wrong, 0u) << "RPCs with inconsistent answers";
  if (kRssBoundApplies) {
    EXPECT_LE(growth_kib, int64_t(rss_bound_kib)) << "RSS grew after the warm-up";
  } else {
    std::printf("RSS bound not checked: AddressSanitizer build (freed memory stays in its "
                "quarantine)\n");
  }
  for (int d = 0; d < kDevices; ++d) {
    EXPECT_GT(cycles[d].size(), 0u) << DeviceName(d) << ": no snapshot cycle completed";
    EXPECT_GT(writes[d].size(), 0u) << DeviceName(d) << ": no write";
  }
  for (int k = 0; k < kKinds; ++k) {
    EXPECT_GT(per_kind[k].size(), 0u) << kKindNames[k] << " was never called";
  }

  // A graceful stop still works after the load.
  const int exit_status = h.StopAgent(SIGTERM);
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << "status " << exit_status << "\n"
      << h.AgentLog();
  Phase("SIGTERM stop");
  std::printf("phases (wall):%s\n", phases_.c_str());
}

}  // namespace
}  // namespace cbt::testing
