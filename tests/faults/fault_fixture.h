// FaultTest: the real daemon over the blksnap emulator process, with what every fault test
// checks afterwards — the kernel's and the agent's snapshot lists agree, trackers are known with
// their CBT generation, every block written since attach is reported by GetChangedExtents, a
// full cycle works, and every byte written reads back.
#ifndef CBT_TESTS_FAULTS_FAULT_FIXTURE_H_
#define CBT_TESTS_FAULTS_FAULT_FIXTURE_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "api_calls.h"

namespace cbt::testing {

using blksnap::emulator::IoctlKind;

inline constexpr uint64_t kMiB = uint64_t{1} << 20;
inline constexpr uint64_t kGiB = uint64_t{1} << 30;
inline constexpr uint64_t kBlock = 64 * 1024;  // tracking block of the small devices
inline constexpr char kDevA[] = "/dev/emu-a";   // 8:16, 64 MiB
inline constexpr char kDevB[] = "/dev/emu-b";   // 8:32, 64 MiB
// 8:48, 32 GiB (sparse): 524,288 tracking blocks, so ReadCbtMap streams two 256 KiB chunks.
inline constexpr char kDevBig[] = "/dev/emu-big";

// The blksnap interface flavour the emulator speaks (the agent detects it).
struct FlavourCase {
  const char* flavour;
  const char* kernel_release;
  const char* control_device;
};
inline void PrintTo(const FlavourCase& c, std::ostream* os) { *os << c.flavour; }
// lk6.15, v7, val7.
std::vector<FlavourCase> AllFlavours();
std::string FlavourCaseName(const ::testing::TestParamInfo<FlavourCase>& info);

class FaultTest : public ::testing::TestWithParam<FlavourCase> {
 protected:
  void SetUp() override;

  AgentHarness& h() { return *harness_; }

  // Attaches and records the CBT base (generation, changes number) of each device.
  void AttachAll(const std::vector<std::string>& devices);
  // Writes through the emulated kernel and remembers the bytes (writes must not overlap).
  void Write(const std::string& device, uint64_t offset, const std::string& data);

  // Arms the emulator to SIGKILL the daemon after its `nth` successful ioctl of `kind`.
  void ArmKill(IoctlKind kind, uint64_t nth = 1);
  // Waits until the daemon is dead (killed by the emulator, not by the test) and checks that
  // the fault fired.
  void ExpectKilledByEmulator();
  // Starts the daemon again with the same state directory.
  void Restart();
  // The daemon's log since the last Restart().
  std::string RestartLog() const { return h().AgentLogSince(restart_log_offset_); }

  // Snapshot ids as the emulated kernel holds them, and as the agent lists them (with
  // known_to_agent per id).
  std::set<std::string> KernelSnapshotIds();
  std::map<std::string, bool> AgentSnapshots();
  // Both views hold exactly `ids`, every one known to the agent.
  void ExpectSnapshots(const std::set<std::string>& ids);
  // ListTrackers holds exactly `devices`, each with the generation recorded at attach.
  void ExpectTrackers(const std::vector<std::string>& devices);
  // GetChangedExtents from the attach base covers every block written to `device` (call it
  // with a snapshot taken after the writes held: the map read is the one frozen at the take).
  void ExpectChangesReported(const std::string& device);
  // A new snapshot of `devices` (after a fresh write to each): images hold the new bytes, the
  // extents since attach cover every write, the release leaves no snapshot behind.
  void ExpectFullCycle(const std::vector<std::string>& devices);
  // Every write reads back from the origin.
  void ExpectNoDataLost();

  AgentHarness& h() const { return *harness_; }

  std::unique_ptr<AgentHarness> harness_;
  struct Base {
    std::string generation;
    uint32_t changes = 0;
  };
  std::map<std::string, Base> base_;
  struct Written {
    uint64_t offset;
    std::string data;
  };
  std::map<std::string, std::vector<Written>> written_;
  // Offsets for the fresh writes of ExpectFullCycle, per device.
  std::map<std::string, uint64_t> next_offset_;
  uint32_t seed_ = 1;
  size_t restart_log_offset_ = 0;
};

// A server-stream call's outcome.
grpc::Status DrainReadCbtMap(AgentHarness& h, const std::string& device, size_t* chunks);

}  // namespace cbt::testing

#endif  // CBT_TESTS_FAULTS_FAULT_FIXTURE_H_
