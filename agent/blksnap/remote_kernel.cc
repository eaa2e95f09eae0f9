#include "blksnap/remote_kernel.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "blksnap/remote_protocol.h"

namespace cbt::blksnap {
namespace {

using remote::MessageHeader;
using remote::Op;

class RemoteKernel final : public Kernel {
 public:
  explicit RemoteKernel(std::string socket_path) : socket_path_(std::move(socket_path)) {
#ifdef PR_SET_PTRACER
    // With Yama ptrace_scope=1 the emulator (often our child or sibling) could not read our
    // memory otherwise. Fails harmlessly (EINVAL) where Yama is absent.
    (void)::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
#endif
  }

  ~RemoteKernel() override {
    for (int fd : idle_) ::close(fd);
  }

  int Open(const std::string& path, int flags, int* fd) override {
    MessageHeader request;
    request.op = static_cast<uint16_t>(Op::kOpen);
    request.arg[0] = static_cast<uint64_t>(static_cast<uint32_t>(flags));
    MessageHeader response;
    std::string payload;
    if (int error = Call(request, path, &response, &payload); error != 0) return error;
    if (response.status == 0) *fd = static_cast<int>(response.arg[0]);
    return response.status;
  }

  int Close(int fd) override {
    MessageHeader request;
    request.op = static_cast<uint16_t>(Op::kClose);
    request.arg[0] = static_cast<uint64_t>(static_cast<int64_t>(fd));
    MessageHeader response;
    std::string payload;
    if (int error = Call(request, {}, &response, &payload); error != 0) return error;
    return response.status;
  }

  int Ioctl(int fd, unsigned long request_number, void* arg) override {
    MessageHeader request;
    request.op = static_cast<uint16_t>(Op::kIoctl);
    request.arg[0] = static_cast<uint64_t>(static_cast<int64_t>(fd));
    request.arg[1] = request_number;
    request.arg[2] = reinterpret_cast<uintptr_t>(arg);
    MessageHeader response;
    std::string payload;
    if (int error = Call(request, {}, &response, &payload); error != 0) return error;
    return response.status;
  }

  int Stat(const std::string& path, FileStatus* status) override {
    MessageHeader request;
    request.op = static_cast<uint16_t>(Op::kStat);
    MessageHeader response;
    std::string payload;
    if (int error = Call(request, path, &response, &payload); error != 0) return error;
    if (response.status != 0) return response.status;
    if (payload.size() != sizeof(remote::WireFileStatus)) return EPROTO;
    remote::WireFileStatus wire;
    std::memcpy(&wire, payload.data(), sizeof(wire));
    *status = FileStatus{};
    status->is_block_device = (wire.flags & remote::kWireBlockDevice) != 0;
    status->is_directory = (wire.flags & remote::kWireDirectory) != 0;
    status->is_regular_file = (wire.flags & remote::kWireRegularFile) != 0;
    status->rdev_major = wire.rdev_major;
    status->rdev_minor = wire.rdev_minor;
    status->dev_major = wire.dev_major;
    status->dev_minor = wire.dev_minor;
    status->size = wire.size;
    return 0;
  }

  int RealPath(const std::string& path, std::string* resolved) override {
    MessageHeader request;
    request.op = static_cast<uint16_t>(Op::kRealPath);
    MessageHeader response;
    std::string payload;
    if (int error = Call(request, path, &response, &payload); error != 0) return error;
    if (response.status == 0) *resolved = std::move(payload);
    return response.status;
  }

  int KernelRelease(std::string* release) override {
    MessageHeader request;
    request.op = static_cast<uint16_t>(Op::kKernelRelease);
    MessageHeader response;
    std::string payload;
    if (int error = Call(request, {}, &response, &payload); error != 0) return error;
    if (response.status == 0) *release = std::move(payload);
    return response.status;
  }

 private:
  // One request/response on an idle (or new) connection. Returns 0 when a response arrived,
  // ENAMETOOLONG for an oversized payload, ENOTCONN on transport failure.
  int Call(const MessageHeader& request, std::string_view payload, MessageHeader* response,
           std::string* response_payload) {
    if (payload.size() > remote::kMaxPayload) return ENAMETOOLONG;
    int fd = TakeConnection();
    if (fd < 0) return ENOTCONN;
    if (!remote::SendMessage(fd, request, payload) ||
        !remote::ReceiveMessage(fd, response, response_payload) ||
        response->op != request.op) {
      ::close(fd);
      return ENOTCONN;
    }
    ReturnConnection(fd);
    return 0;
  }

  int TakeConnection() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        const int fd = idle_.back();
        idle_.pop_back();
        return fd;
      }
    }
    return remote::ConnectSocket(socket_path_);
  }

  void ReturnConnection(int fd) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(fd);
  }

  const std::string socket_path_;
  std::mutex mu_;
  std::vector<int> idle_;  // guarded by mu_
};

}  // namespace

std::unique_ptr<Kernel> NewRemoteKernel(const std::string& socket_path) {
  return std::make_unique<RemoteKernel>(socket_path);
}

}  // namespace cbt::blksnap
