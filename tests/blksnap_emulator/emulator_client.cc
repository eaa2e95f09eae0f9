#include "tests/blksnap_emulator/emulator_client.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "blksnap/remote_protocol.h"

extern char** environ;

namespace cbt::blksnap::emulator {

using remote::MessageHeader;
using remote::Op;

struct EmulatorClient::State {
  std::mutex mu;
  int fd = -1;

  ~State() {
    if (fd >= 0) ::close(fd);
  }

  // One control request; the response payload goes to `data` when the status is OK.
  absl::Status Call(Op op, MessageHeader request, std::string_view payload, std::string* data,
                    MessageHeader* reply = nullptr) {
    std::lock_guard<std::mutex> lock(mu);
    if (fd < 0) return absl::UnavailableError("the emulator connection is closed");
    request.op = static_cast<uint16_t>(op);
    MessageHeader response;
    std::string response_payload;
    if (!remote::SendMessage(fd, request, payload) ||
        !remote::ReceiveMessage(fd, &response, &response_payload) || response.op != request.op) {
      ::close(fd);
      fd = -1;
      return absl::UnavailableError("lost the connection to the blksnap emulator");
    }
    if (response.status != 0) {
      return absl::Status(static_cast<absl::StatusCode>(response.status), response_payload);
    }
    if (data != nullptr) *data = std::move(response_payload);
    if (reply != nullptr) *reply = response;
    return absl::OkStatus();
  }
};

EmulatorClient::EmulatorClient(std::unique_ptr<State> state) : state_(std::move(state)) {}
EmulatorClient::EmulatorClient(EmulatorClient&&) noexcept = default;
EmulatorClient& EmulatorClient::operator=(EmulatorClient&&) noexcept = default;
EmulatorClient::~EmulatorClient() = default;

absl::StatusOr<EmulatorClient> EmulatorClient::Connect(const std::string& socket_path) {
  const int fd = remote::ConnectSocket(socket_path);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", socket_path, ": ", std::strerror(-fd)));
  }
  auto state = std::make_unique<State>();
  state->fd = fd;
  return EmulatorClient(std::move(state));
}

absl::Status EmulatorClient::AddDevice(const std::string& path, uint64_t size_bytes,
                                       uint32_t major, uint32_t minor) {
  MessageHeader request;
  request.arg[0] = size_bytes;
  request.arg[1] = major;
  request.arg[2] = minor;
  return state_->Call(Op::kAddDevice, request, path, nullptr);
}

absl::Status EmulatorClient::AddSymlink(const std::string& link, const std::string& target) {
  return state_->Call(Op::kAddSymlink, MessageHeader{}, link + '\0' + target, nullptr);
}

absl::Status EmulatorClient::AddMount(const std::string& directory,
                                      const std::string& device_path) {
  return state_->Call(Op::kAddMount, MessageHeader{}, directory + '\0' + device_path, nullptr);
}

absl::Status EmulatorClient::RemoveDevice(const std::string& path) {
  return state_->Call(Op::kRemoveDevice, MessageHeader{}, path, nullptr);
}

absl::Status EmulatorClient::ResizeDevice(const std::string& path, uint64_t size_bytes) {
  MessageHeader request;
  request.arg[0] = size_bytes;
  return state_->Call(Op::kResizeDevice, request, path, nullptr);
}

absl::Status EmulatorClient::WriteDevice(const std::string& path, uint64_t offset,
                                         const std::string& data) {
  if (path.size() >= remote::kMaxPayload / 2) return absl::InvalidArgumentError("path too long");
  const size_t piece_limit = remote::kMaxPayload - path.size();
  size_t done = 0;
  do {
    const size_t piece = std::min(piece_limit, data.size() - done);
    MessageHeader request;
    request.arg[0] = offset + done;
    request.arg[1] = path.size();
    std::string payload = path;
    payload.append(data, done, piece);
    if (absl::Status status = state_->Call(Op::kWriteDevice, request, payload, nullptr);
        !status.ok()) {
      return status;
    }
    done += piece;
  } while (done < data.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> EmulatorClient::ReadDevice(const std::string& path, uint64_t offset,
                                                       uint64_t length) {
  std::string out;
  uint64_t done = 0;
  do {
    const uint64_t piece = std::min<uint64_t>(remote::kMaxPayload, length - done);
    MessageHeader request;
    request.arg[0] = offset + done;
    request.arg[1] = piece;
    std::string data;
    if (absl::Status status = state_->Call(Op::kReadDevice, request, path, &data); !status.ok()) {
      return status;
    }
    if (data.size() != piece) return absl::InternalError("short read from the emulator");
    out += data;
    done += piece;
  } while (done < length);
  return out;
}

absl::Status EmulatorClient::ArmKill(IoctlKind kind, uint64_t nth, pid_t pid) {
  MessageHeader request;
  request.arg[0] = static_cast<uint64_t>(kind);
  request.arg[1] = nth;
  request.arg[2] = static_cast<uint64_t>(pid);
  return state_->Call(Op::kArmKill, request, {}, nullptr);
}

absl::StatusOr<EmulatorClient::KillState> EmulatorClient::GetKillState() {
  MessageHeader reply;
  if (absl::Status status = state_->Call(Op::kKillState, MessageHeader{}, {}, nullptr, &reply);
      !status.ok()) {
    return status;
  }
  KillState state;
  state.fired = reply.arg[0] != 0;
  state.killed_pid = static_cast<pid_t>(reply.arg[1]);
  state.counted = reply.arg[2];
  return state;
}

absl::StatusOr<std::vector<EmulatorClient::SnapshotView>> EmulatorClient::ListSnapshots() {
  std::string text;
  if (absl::Status status = state_->Call(Op::kListSnapshots, MessageHeader{}, {}, &text);
      !status.ok()) {
    return status;
  }
  std::vector<SnapshotView> views;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    if (fields.size() != 4 || !absl::StartsWith(fields[1], "taken=") ||
        !absl::StartsWith(fields[2], "corrupted=") || !absl::StartsWith(fields[3], "devices=")) {
      return absl::InternalError(absl::StrCat("malformed snapshot line '", line, "'"));
    }
    SnapshotView view;
    view.id = std::string(fields[0]);
    view.taken = fields[1] == "taken=1";
    view.corrupted = fields[2] == "corrupted=1";
    for (absl::string_view device :
         absl::StrSplit(fields[3].substr(sizeof("devices=") - 1), ',', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> numbers = absl::StrSplit(device, ':');
      uint32_t major = 0, minor = 0;
      if (!absl::SimpleAtoi(numbers.first, &major) || !absl::SimpleAtoi(numbers.second, &minor)) {
        return absl::InternalError(absl::StrCat("malformed device '", device, "'"));
      }
      view.devices.emplace_back(major, minor);
    }
    views.push_back(std::move(view));
  }
  return views;
}

absl::StatusOr<std::unique_ptr<EmulatorProcess>> EmulatorProcess::Start(
    const std::string& binary, const std::vector<std::string>& args,
    std::chrono::milliseconds timeout) {
  std::string socket_path;
  for (const std::string& arg : args) {
    if (arg.rfind("--socket=", 0) == 0) socket_path = arg.substr(sizeof("--socket=") - 1);
  }
  if (socket_path.empty()) return absl::InvalidArgumentError("args lack --socket=PATH");
  ::unlink(socket_path.c_str());  // so that a stale node is not mistaken for readiness

  std::vector<std::string> storage;
  storage.push_back(binary);
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : storage) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (int error = ::posix_spawn(&pid, binary.c_str(), nullptr, nullptr, argv.data(), environ);
      error != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", binary, ": ", std::strerror(error)));
  }
  auto process = std::unique_ptr<EmulatorProcess>(new EmulatorProcess(pid, socket_path));

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const int fd = remote::ConnectSocket(socket_path);
    if (fd >= 0) {
      ::close(fd);
      return process;
    }
    int wstatus = 0;
    if (::waitpid(pid, &wstatus, WNOHANG) == pid) {
      process->pid_ = -1;
      return absl::InternalError(absl::StrCat(binary, " exited before accepting connections (",
                                              WIFEXITED(wstatus) ? "status " : "signal ",
                                              WIFEXITED(wstatus) ? WEXITSTATUS(wstatus)
                                                                 : WTERMSIG(wstatus),
                                              ")"));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(binary, " did not accept connections on ", socket_path));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

EmulatorProcess::~EmulatorProcess() { Stop(); }

void EmulatorProcess::Stop() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    bool exited = false;
    while (!exited && std::chrono::steady_clock::now() < deadline) {
      int wstatus = 0;
      const pid_t result = ::waitpid(pid_, &wstatus, WNOHANG);
      if (result == pid_ || (result < 0 && errno == ECHILD)) {
        exited = true;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    if (!exited) {
      ::kill(pid_, SIGKILL);
      int wstatus = 0;
      ::waitpid(pid_, &wstatus, 0);
    }
    pid_ = -1;
  }
  if (!socket_path_.empty()) {
    ::unlink(socket_path_.c_str());
    socket_path_.clear();
  }
}

}  // namespace cbt::blksnap::emulator
