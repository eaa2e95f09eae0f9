// blksnap-emulator: the blksnap uapi emulator as a process of its own, so that a real agent
// daemon can be tested end to end and the emulated kernel state outlives daemon restarts.
//
//   blksnap-emulator --socket=PATH [--flavour=lk6.15|v7|val7] [--kernel_release=RELEASE]
//       [--backing_dir=DIR] [--chunk_size=SIZE] [--device=PATH:SIZE[:MAJ:MIN]]...
//       [--symlink=LINK:TARGET]... [--mount=DIR:DEVICE]... [--kill_after=KIND:N[:PID]]
//
// SIZE takes a K, M, G or T suffix (binary). Devices without MAJ:MIN get 7:N (loop-like).
// Serves the wire protocol of agent/blksnap/remote_protocol.h on a Unix SOCK_SEQPACKET socket,
// one thread per connection. Seam calls run on behalf of the peer process (SO_PEERCRED pid):
// its file descriptors live until its last connection closes, and ioctl arguments are read
// from and written to its memory with process_vm_readv/writev. Prints
// "blksnap-emulator: ready on PATH" to stderr once listening. Stops on SIGTERM/SIGINT.
//
// Fault injection: --kill_after=KIND:N[:PID] (or, at run time, the kArmKill control message,
// EmulatorClient::ArmKill) makes the emulator SIGKILL the client process right after it has
// executed that client's N-th successful ioctl of KIND (create, destroy, take, snapshot_add,
// cbt_map, ... — IoctlKindName in emulated_kernel.h; the flavour does not matter), INSTEAD of
// sending the response: the kernel state has changed, the caller never learns the result, and
// no further request of that process is executed (its other connections are closed unanswered).
// So a daemon dies exactly between two kernel calls. Without a fault armed nothing differs.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "blksnap/remote_protocol.h"
#include "core/generation_id.h"
#include "tests/blksnap_emulator/emulated_kernel.h"

namespace cbt::blksnap::emulator {
namespace {

using remote::MessageHeader;
using remote::Op;

bool ParseSize(const std::string& text, uint64_t* bytes) {
  if (text.empty()) return false;
  uint64_t multiplier = 1;
  std::string digits = text;
  switch (text.back()) {
    case 'k':
    case 'K':
      multiplier = uint64_t{1} << 10;
      break;
    case 'm':
    case 'M':
      multiplier = uint64_t{1} << 20;
      break;
    case 'g':
    case 'G':
      multiplier = uint64_t{1} << 30;
      break;
    case 't':
    case 'T':
      multiplier = uint64_t{1} << 40;
      break;
    default:
      break;
  }
  if (multiplier != 1) digits.pop_back();
  uint64_t value = 0;
  if (!absl::SimpleAtoi(digits, &value)) return false;
  if (value > UINT64_MAX / multiplier) return false;
  *bytes = value * multiplier;
  return true;
}

struct DeviceSpec {
  std::string path;
  uint64_t size = 0;
  bool has_number = false;
  uint32_t major = 0;
  uint32_t minor = 0;
};

// PATH:SIZE[:MAJ:MIN], parsed from the right so that PATH may contain ':'.
bool ParseDeviceSpec(const std::string& text, DeviceSpec* spec) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  if (parts.size() < 2) return false;
  if (parts.size() >= 4 && absl::SimpleAtoi(parts[parts.size() - 2], &spec->major) &&
      absl::SimpleAtoi(parts[parts.size() - 1], &spec->minor) &&
      ParseSize(parts[parts.size() - 3], &spec->size)) {
    spec->has_number = true;
    parts.resize(parts.size() - 3);
  } else if (ParseSize(parts.back(), &spec->size)) {
    parts.pop_back();
  } else {
    return false;
  }
  spec->path = absl::StrJoin(parts, ":");
  return !spec->path.empty();
}

// LINK:TARGET (or DIR:DEVICE); the separator is the first ':' followed by '/' or '.', else the
// first ':' — so that links such as /dev/disk/by-path/pci-0000:00:04.0 work.
bool SplitPair(const std::string& text, std::string* first, std::string* second) {
  size_t at = std::string::npos;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] == ':' && (text[i + 1] == '/' || text[i + 1] == '.')) {
      at = i;
      break;
    }
  }
  if (at == std::string::npos) at = text.find(':');
  if (at == std::string::npos || at == 0 || at + 1 >= text.size()) return false;
  *first = text.substr(0, at);
  *second = text.substr(at + 1);
  return true;
}

// Field 22 of /proc/PID/stat (start time in clock ticks since boot); 0 if the process is gone.
// Tells a killed process from a later one that reuses its pid.
uint64_t ProcessStartTime(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> fields =
      absl::StrSplit(text.substr(paren + 1), ' ', absl::SkipEmpty());
  uint64_t start = 0;
  // fields[0] is field 3 (state), so field 22 is fields[19].
  if (fields.size() < 20 || !absl::SimpleAtoi(fields[19], &start)) return 0;
  return start;
}

// One armed "kill the client after its N-th ioctl of a kind" fault.
struct KillFault {
  bool armed = false;
  IoctlKind kind = IoctlKind::kOther;
  uint64_t nth = 0;
  pid_t pid = 0;  // 0: any client
  uint64_t seen = 0;
  bool fired = false;
  pid_t killed_pid = 0;
};

class Server {
 public:
  explicit Server(EmulatedKernel* kernel) : kernel_(kernel) {}

  void Arm(IoctlKind kind, uint64_t nth, pid_t pid) {
    std::lock_guard<std::mutex> lock(fault_mu_);
    fault_ = KillFault{};
    fault_.armed = nth > 0;
    fault_.kind = kind;
    fault_.nth = nth;
    fault_.pid = pid;
  }

  void HandleConnection(int fd) {
    struct ucred credentials;
    socklen_t length = sizeof(credentials);
    pid_t pid = 0;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0) {
      pid = credentials.pid;
    }
    if (IsKilled(pid)) {  // a killed process still connecting: it is dead to the kernel
      ::close(fd);
      return;
    }
    const uint64_t client = static_cast<uint64_t>(pid);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++connections_[client];
    }
    ProcessMemory memory(pid);
    MessageHeader request;
    std::string payload;
    while (remote::ReceiveMessage(fd, &request, &payload)) {
      if (IsKilled(pid)) break;
      const bool watched = static_cast<Op>(request.op) == Op::kIoctl && FaultArmedFor(pid);
      const IoctlKind kind =
          watched ? kernel_->ClassifyIoctl(client, memory, static_cast<int>(request.arg[0]),
                                           static_cast<unsigned long>(request.arg[1]),
                                           request.arg[2])
                  : IoctlKind::kOther;
      MessageHeader response;
      response.op = request.op;
      std::string response_payload;
      Handle(client, memory, request, payload, &response, &response_payload);
      if (watched && response.status == 0 && FaultFires(pid, kind)) {
        // No response: the next receive ends when the process is gone.
        continue;
      }
      if (!remote::SendMessage(fd, response, response_payload)) break;
    }
    ::close(fd);
    std::lock_guard<std::mutex> lock(mu_);
    if (--connections_[client] == 0) {
      connections_.erase(client);
      kernel_->DropClient(client);
    }
  }

 private:
  bool FaultArmedFor(pid_t pid) {
    std::lock_guard<std::mutex> lock(fault_mu_);
    return fault_.armed && !fault_.fired && (fault_.pid == 0 || fault_.pid == pid);
  }

  // Counts a successful ioctl of `kind` by `pid`; kills `pid` when it is the N-th.
  bool FaultFires(pid_t pid, IoctlKind kind) {
    std::lock_guard<std::mutex> lock(fault_mu_);
    if (!fault_.armed || fault_.fired || kind != fault_.kind ||
        (fault_.pid != 0 && fault_.pid != pid)) {
      return false;
    }
    if (++fault_.seen < fault_.nth) return false;
    fault_.fired = true;
    fault_.killed_pid = pid;
    killed_[pid] = ProcessStartTime(pid);
    const int result = ::kill(pid, SIGKILL);
    std::fprintf(stderr, "blksnap-emulator: fault: SIGKILL to pid %d after %s #%llu%s\n",
                 static_cast<int>(pid), IoctlKindName(kind),
                 static_cast<unsigned long long>(fault_.seen),
                 result == 0 ? "" : " (kill failed)");
    return true;
  }

  bool IsKilled(pid_t pid) {
    std::lock_guard<std::mutex> lock(fault_mu_);
    auto it = killed_.find(pid);
    if (it == killed_.end()) return false;
    const uint64_t start = ProcessStartTime(pid);
    if (start != 0 && start == it->second) return true;
    killed_.erase(it);  // gone, or the pid belongs to a new process now
    return false;
  }

  std::string DescribeSnapshots() {
    std::string out;
    for (const EmulatedSnapshotView& view : kernel_->ListSnapshots()) {
      Uuid id;
      std::memcpy(id.bytes.data(), view.id.b, sizeof(view.id.b));
      std::vector<std::string> devices;
      for (const auto& [major, minor] : view.devices) {
        devices.push_back(absl::StrCat(major, ":", minor));
      }
      absl::StrAppend(&out, id.ToString(), " taken=", view.taken ? 1 : 0,
                      " corrupted=", view.corrupted ? 1 : 0,
                      " devices=", absl::StrJoin(devices, ","), "\n");
    }
    return out;
  }

  static void SetStatus(const absl::Status& status, MessageHeader* response,
                        std::string* payload) {
    response->status = static_cast<int32_t>(status.code());
    *payload = std::string(status.message());
  }

  void Handle(uint64_t client, ProcessMemory& memory, const MessageHeader& request,
              const std::string& payload, MessageHeader* response, std::string* out) {
    switch (static_cast<Op>(request.op)) {
      case Op::kOpen: {
        int fd = -1;
        response->status =
            kernel_->OpenFor(client, payload, static_cast<int>(request.arg[0]), &fd);
        response->arg[0] = static_cast<uint64_t>(static_cast<int64_t>(fd));
        return;
      }
      case Op::kClose:
        response->status = kernel_->CloseFor(client, static_cast<int>(request.arg[0]));
        return;
      case Op::kIoctl:
        response->status = kernel_->IoctlFor(client, memory, static_cast<int>(request.arg[0]),
                                             static_cast<unsigned long>(request.arg[1]),
                                             request.arg[2]);
        return;
      case Op::kStat: {
        FileStatus status;
        response->status = kernel_->Stat(payload, &status);
        if (response->status == 0) {
          remote::WireFileStatus wire;
          wire.flags = (status.is_block_device ? remote::kWireBlockDevice : 0) |
                       (status.is_directory ? remote::kWireDirectory : 0) |
                       (status.is_regular_file ? remote::kWireRegularFile : 0);
          wire.rdev_major = status.rdev_major;
          wire.rdev_minor = status.rdev_minor;
          wire.dev_major = status.dev_major;
          wire.dev_minor = status.dev_minor;
          wire.size = status.size;
          out->assign(reinterpret_cast<const char*>(&wire), sizeof(wire));
        }
        return;
      }
      case Op::kRealPath:
        response->status = kernel_->RealPath(payload, out);
        return;
      case Op::kKernelRelease:
        response->status = kernel_->KernelRelease(out);
        return;
      case Op::kAddDevice:
        SetStatus(kernel_->AddDevice(payload, request.arg[0], static_cast<uint32_t>(request.arg[1]),
                                     static_cast<uint32_t>(request.arg[2])),
                  response, out);
        return;
      case Op::kAddSymlink:
      case Op::kAddMount: {
        const size_t nul = payload.find('\0');
        if (nul == std::string::npos) {
          SetStatus(absl::InvalidArgumentError("malformed request"), response, out);
          return;
        }
        const std::string first = payload.substr(0, nul);
        const std::string second = payload.substr(nul + 1);
        SetStatus(static_cast<Op>(request.op) == Op::kAddSymlink
                      ? kernel_->AddSymlink(first, second)
                      : kernel_->AddMount(first, second),
                  response, out);
        return;
      }
      case Op::kRemoveDevice:
        SetStatus(kernel_->RemoveDevice(payload), response, out);
        return;
      case Op::kResizeDevice:
        SetStatus(kernel_->ResizeDevice(payload, request.arg[0]), response, out);
        return;
      case Op::kWriteDevice: {
        if (request.arg[1] > payload.size()) {
          SetStatus(absl::InvalidArgumentError("malformed request"), response, out);
          return;
        }
        const std::string path = payload.substr(0, request.arg[1]);
        SetStatus(kernel_->WriteDevice(path, request.arg[0], payload.substr(request.arg[1])),
                  response, out);
        return;
      }
      case Op::kReadDevice: {
        if (request.arg[1] > remote::kMaxPayload) {
          SetStatus(absl::InvalidArgumentError("read larger than one message"), response, out);
          return;
        }
        absl::StatusOr<std::string> data =
            kernel_->ReadDevice(payload, request.arg[0], request.arg[1]);
        if (data.ok()) {
          response->status = 0;
          *out = std::move(*data);
        } else {
          SetStatus(data.status(), response, out);
        }
        return;
      }
      case Op::kArmKill: {
        if (request.arg[0] >= kIoctlKindCount) {
          SetStatus(absl::InvalidArgumentError("unknown ioctl kind"), response, out);
          return;
        }
        Arm(static_cast<IoctlKind>(request.arg[0]), request.arg[1],
            static_cast<pid_t>(request.arg[2]));
        SetStatus(absl::OkStatus(), response, out);
        return;
      }
      case Op::kKillState: {
        std::lock_guard<std::mutex> lock(fault_mu_);
        response->status = 0;
        response->arg[0] = fault_.fired ? 1 : 0;
        response->arg[1] = static_cast<uint64_t>(fault_.killed_pid);
        response->arg[2] = fault_.seen;
        return;
      }
      case Op::kListSnapshots:
        response->status = 0;
        *out = DescribeSnapshots();
        return;
    }
    response->status = EOPNOTSUPP;  // unknown operation
  }

  EmulatedKernel* const kernel_;
  std::mutex mu_;
  std::map<uint64_t, int> connections_;  // per client (pid); guarded by mu_
  std::mutex fault_mu_;
  KillFault fault_;                 // guarded by fault_mu_
  std::map<pid_t, uint64_t> killed_;  // pid -> its start time; guarded by fault_mu_
};

int Usage(const char* message) {
  std::fprintf(stderr,
               "blksnap-emulator: %s\n"
               "usage: blksnap-emulator --socket=PATH [--flavour=lk6.15|v7|val7]\n"
               "  [--kernel_release=RELEASE] [--backing_dir=DIR] [--chunk_size=SIZE]\n"
               "  [--device=PATH:SIZE[:MAJ:MIN]]... [--symlink=LINK:TARGET]...\n"
               "  [--mount=DIR:DEVICE]... [--kill_after=KIND:N[:PID]]\n",
               message);
  return 2;
}

int Main(int argc, char** argv) {
  EmulatorOptions options;
  std::string socket_path;
  std::vector<DeviceSpec> devices;
  std::vector<std::pair<std::string, std::string>> symlinks;
  std::vector<std::pair<std::string, std::string>> mounts;
  IoctlKind kill_kind = IoctlKind::kOther;
  uint64_t kill_nth = 0;
  pid_t kill_pid = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (name == "--socket") {
      socket_path = value;
    } else if (name == "--flavour" || name == "--flavor") {
      absl::StatusOr<Flavour> flavour = ParseFlavour(value);
      if (!flavour.ok()) return Usage(std::string(flavour.status().message()).c_str());
      options.flavour = *flavour;
    } else if (name == "--kernel_release") {
      options.kernel_release = value;
    } else if (name == "--backing_dir") {
      options.backing_dir = value;
    } else if (name == "--chunk_size") {
      if (!ParseSize(value, &options.chunk_size)) return Usage("bad --chunk_size");
    } else if (name == "--device") {
      DeviceSpec spec;
      if (!ParseDeviceSpec(value, &spec)) return Usage(("bad --device=" + value).c_str());
      devices.push_back(spec);
    } else if (name == "--symlink" || name == "--mount") {
      std::string first, second;
      if (!SplitPair(value, &first, &second)) return Usage(("bad " + arg).c_str());
      (name == "--symlink" ? symlinks : mounts).emplace_back(first, second);
    } else if (name == "--kill_after") {
      std::vector<std::string> parts = absl::StrSplit(value, ':');
      absl::StatusOr<IoctlKind> kind =
          parts.empty() ? absl::InvalidArgumentError("empty") : ParseIoctlKind(parts[0]);
      int pid = 0;
      if (!kind.ok() || parts.size() < 2 || parts.size() > 3 ||
          !absl::SimpleAtoi(parts[1], &kill_nth) || kill_nth == 0 ||
          (parts.size() == 3 && !absl::SimpleAtoi(parts[2], &pid))) {
        return Usage(("bad --kill_after=" + value + " (KIND:N[:PID], N >= 1)").c_str());
      }
      kill_kind = *kind;
      kill_pid = pid;
    } else {
      return Usage(("unknown argument " + arg).c_str());
    }
  }
  if (socket_path.empty()) return Usage("--socket is required");

  EmulatedKernel kernel(options);
  std::set<uint32_t> loop_minors;
  for (const DeviceSpec& spec : devices) {
    if (spec.has_number && spec.major == 7) loop_minors.insert(spec.minor);
  }
  uint32_t next_minor = 0;
  for (DeviceSpec spec : devices) {
    if (!spec.has_number) {
      while (loop_minors.count(next_minor) != 0) ++next_minor;
      spec.major = 7;
      spec.minor = next_minor++;
    }
    if (absl::Status status = kernel.AddDevice(spec.path, spec.size, spec.major, spec.minor);
        !status.ok()) {
      std::fprintf(stderr, "blksnap-emulator: %s\n", status.ToString().c_str());
      return 1;
    }
  }
  for (const auto& [link, target] : symlinks) {
    if (absl::Status status = kernel.AddSymlink(link, target); !status.ok()) {
      std::fprintf(stderr, "blksnap-emulator: %s\n", status.ToString().c_str());
      return 1;
    }
  }
  for (const auto& [directory, device] : mounts) {
    if (absl::Status status = kernel.AddMount(directory, device); !status.ok()) {
      std::fprintf(stderr, "blksnap-emulator: %s\n", status.ToString().c_str());
      return 1;
    }
  }

  struct sockaddr_un address;
  std::memset(&address, 0, sizeof(address));
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(address.sun_path)) return Usage("socket path too long");
  std::memcpy(address.sun_path, socket_path.data(), socket_path.size());
  const int listen_fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (listen_fd < 0) {
    std::perror("blksnap-emulator: socket");
    return 1;
  }
  ::unlink(socket_path.c_str());
  if (::bind(listen_fd, reinterpret_cast<const struct sockaddr*>(&address), sizeof(address)) !=
          0 ||
      ::listen(listen_fd, 64) != 0) {
    std::perror("blksnap-emulator: bind/listen");
    return 1;
  }
  ::signal(SIGPIPE, SIG_IGN);
  std::fprintf(stderr, "blksnap-emulator: %s flavour, ready on %s\n",
               FlavourName(options.flavour), socket_path.c_str());

  Server server(&kernel);
  if (kill_nth > 0) server.Arm(kill_kind, kill_nth, kill_pid);
  for (;;) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::perror("blksnap-emulator: accept");
      return 1;
    }
    std::thread([&server, fd] { server.HandleConnection(fd); }).detach();
  }
}

}  // namespace
}  // namespace cbt::blksnap::emulator

int main(int argc, char** argv) {
  // Killed by SIGTERM/SIGINT with the default action: the state is in memory and the backing
  // files are unnamed, so nothing is left behind except the socket node.
  return cbt::blksnap::emulator::Main(argc, argv);
}
