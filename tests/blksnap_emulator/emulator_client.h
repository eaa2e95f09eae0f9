// Test-side access to an out-of-process blksnap uapi emulator (binary `blksnap-emulator`):
//  - EmulatorClient: the EmulatedKernel test-control calls (devices, symlinks, mounts, device
//    I/O) over the emulator's socket, plus fault injection (ArmKill: SIGKILL the client right
//    after a chosen ioctl) and the emulator's own list of snapshots;
//  - EmulatorProcess: spawns the emulator binary, waits until its socket accepts connections,
//    and kills it on destruction.
// The agent side of the same socket is cbt::blksnap::NewRemoteKernel (agent/blksnap/remote_kernel.h).
#ifndef CBT_TESTS_BLKSNAP_EMULATOR_EMULATOR_CLIENT_H_
#define CBT_TESTS_BLKSNAP_EMULATOR_EMULATOR_CLIENT_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ioctl_kind.h"

namespace cbt::blksnap::emulator {

// Thread-safe (calls are serialized on one connection).
class EmulatorClient {
 public:
  static absl::StatusOr<EmulatorClient> Connect(const std::string& socket_path);

  EmulatorClient(EmulatorClient&&) noexcept;
  EmulatorClient& operator=(EmulatorClient&&) noexcept;
  ~EmulatorClient();

  // Same contracts as the EmulatedKernel methods of the same names. Device I/O of any size is
  // split into messages of at most remote::kMaxPayload bytes (so it is not atomic).
  absl::Status AddDevice(const std::string& path, uint64_t size_bytes, uint32_t major,
                         uint32_t minor);
  absl::Status AddSymlink(const std::string& link, const std::string& target);
  absl::Status AddMount(const std::string& directory, const std::string& device_path);
  absl::Status RemoveDevice(const std::string& path);
  absl::Status ResizeDevice(const std::string& path, uint64_t size_bytes);
  absl::Status WriteDevice(const std::string& path, uint64_t offset, const std::string& data);
  absl::StatusOr<std::string> ReadDevice(const std::string& path, uint64_t offset,
                                         uint64_t length);

  // Fault injection: right after the emulator has executed the `nth` (>= 1, counted from now)
  // successful ioctl of `kind` made by process `pid` (0: by any client), it SIGKILLs that
  // process instead of answering, and executes nothing more for it. One-shot; `nth` = 0
  // disarms. See emulator_main.cc.
  absl::Status ArmKill(IoctlKind kind, uint64_t nth, pid_t pid = 0);
  struct KillState {
    bool fired = false;
    pid_t killed_pid = 0;
    uint64_t counted = 0;  // matching ioctls seen since arming
  };
  absl::StatusOr<KillState> GetKillState();

  // The emulated module's own view of its snapshots (what no uapi call shows), in COLLECT
  // order.
  struct SnapshotView {
    std::string id;  // canonical UUID text
    bool taken = false;
    bool corrupted = false;
    std::vector<std::pair<uint32_t, uint32_t>> devices;  // major:minor of the members
  };
  absl::StatusOr<std::vector<SnapshotView>> ListSnapshots();

 private:
  struct State;
  explicit EmulatorClient(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

class EmulatorProcess {
 public:
  // Starts `binary` with `args` (which must contain --socket=PATH) and waits until the socket
  // accepts a connection. Fails if the process exits first or `timeout` passes (then it is
  // killed).
  static absl::StatusOr<std::unique_ptr<EmulatorProcess>> Start(
      const std::string& binary, const std::vector<std::string>& args,
      std::chrono::milliseconds timeout = std::chrono::seconds(10));

  EmulatorProcess(const EmulatorProcess&) = delete;
  EmulatorProcess& operator=(const EmulatorProcess&) = delete;
  // Stop().
  ~EmulatorProcess();

  pid_t pid() const { return pid_; }
  const std::string& socket_path() const { return socket_path_; }
  // SIGTERM, then SIGKILL if it does not exit within 2 s; removes the socket node. Idempotent.
  void Stop();

 private:
  EmulatorProcess(pid_t pid, std::string socket_path)
      : pid_(pid), socket_path_(std::move(socket_path)) {}

  pid_t pid_;
  std::string socket_path_;
};

}  // namespace cbt::blksnap::emulator

#endif  // CBT_TESTS_BLKSNAP_EMULATOR_EMULATOR_CLIENT_H_
