// Wire format between the blksnap uapi emulator process (tests/blksnap_emulator, binary
// `blksnap-emulator`) and its clients: the agent's RemoteKernel (remote_kernel.h) and test
// control clients (EmulatorClient).
//
// Transport: a Unix SOCK_SEQPACKET socket. Every message is exactly one packet:
//   MessageHeader (48 bytes, host byte order; both ends run on the same machine)
//   followed by `payload_length` payload bytes (at most kMaxPayload).
// Each request gets exactly one response on the same connection, with the same `op`. A
// connection carries one request at a time; clients open several connections for concurrency.
//
// Seam operations (the Kernel interface, answered with `status` = 0 or a positive errno):
//   kOpen          req: arg[0] = open flags, payload = path          resp: arg[0] = fd
//   kClose         req: arg[0] = fd
//   kIoctl         req: arg[0] = fd, arg[1] = request number, arg[2] = the ioctl argument as
//                  an ADDRESS in the calling process. The emulator reads and writes the
//                  caller's memory with process_vm_readv/writev, using the peer pid from
//                  SO_PEERCRED, and follows embedded user pointers the same way.
//   kStat          req: payload = path                              resp: payload = WireFileStatus
//   kRealPath      req: payload = path                              resp: payload = resolved path
//   kKernelRelease                                                  resp: payload = release
// File descriptors belong to the calling PROCESS (peer pid), like a kernel's: any connection of
// that process may use them; they are closed when the process's last connection closes. Kernel
// objects (trackers, CBT maps, snapshots) are never dropped with a client.
//
// Control operations (test harness; `status` = absl::StatusCode, payload = error message):
//   kAddDevice     req: arg[0] = size bytes, arg[1] = major, arg[2] = minor, payload = path
//   kAddSymlink    req: payload = link '\0' target
//   kAddMount      req: payload = directory '\0' device path
//   kRemoveDevice  req: payload = path
//   kResizeDevice  req: arg[0] = size bytes, payload = path
//   kWriteDevice   req: arg[0] = byte offset, arg[1] = path length, payload = path + data
//   kReadDevice    req: arg[0] = byte offset, arg[1] = length (<= kMaxPayload), payload = path
//                  resp (OK): payload = data
// Larger device I/O is split by the client into pieces of at most kMaxPayload bytes.
//
// Fault injection and inspection (test harness, same status convention):
//   kArmKill       req: arg[0] = ioctl kind (tests/blksnap_emulator IoctlKind), arg[1] = N
//                  (>= 1; 0 disarms), arg[2] = pid (0: any client). Right after the emulator
//                  has executed the N-th SUCCESSFUL ioctl of that kind (counted from arming) for
//                  a matching client, it sends SIGKILL to that client process instead of the
//                  response, and executes no further request of that process. One-shot.
//   kKillState     resp: arg[0] = 1 once fired, arg[1] = killed pid, arg[2] = matching calls
//                  counted so far
//   kListSnapshots resp: payload = one line per snapshot the emulated module holds:
//                  "<uuid> taken=<0|1> corrupted=<0|1> devices=<maj:min>[,<maj:min>...]\n"
#ifndef CBT_AGENT_BLKSNAP_REMOTE_PROTOCOL_H_
#define CBT_AGENT_BLKSNAP_REMOTE_PROTOCOL_H_

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace cbt::blksnap::remote {

inline constexpr uint32_t kMagic = 0x45544243;  // "CBTE" little-endian
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kMaxPayload = 64 * 1024;

enum class Op : uint16_t {
  // Seam operations.
  kOpen = 1,
  kClose = 2,
  kIoctl = 3,
  kStat = 4,
  kRealPath = 5,
  kKernelRelease = 6,
  // Control operations.
  kAddDevice = 100,
  kAddSymlink = 101,
  kAddMount = 102,
  kRemoveDevice = 103,
  kResizeDevice = 104,
  kWriteDevice = 105,
  kReadDevice = 106,
  // Fault injection and inspection.
  kArmKill = 107,
  kKillState = 108,
  kListSnapshots = 109,
};

struct MessageHeader {
  uint32_t magic = kMagic;
  uint16_t version = kProtocolVersion;
  uint16_t op = 0;              // Op
  uint32_t payload_length = 0;  // bytes following the header
  int32_t status = 0;           // responses: errno (seam) or absl::StatusCode (control)
  uint64_t arg[4] = {0, 0, 0, 0};
};
static_assert(sizeof(MessageHeader) == 48);
static_assert(offsetof(MessageHeader, op) == 6 && offsetof(MessageHeader, payload_length) == 8 &&
              offsetof(MessageHeader, status) == 12 && offsetof(MessageHeader, arg) == 16);

// FileStatus (kernel.h) on the wire.
struct WireFileStatus {
  uint32_t flags = 0;  // kWireBlockDevice | kWireDirectory | kWireRegularFile
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  uint32_t reserved = 0;
  uint64_t size = 0;
};
static_assert(sizeof(WireFileStatus) == 32 && offsetof(WireFileStatus, size) == 24);
inline constexpr uint32_t kWireBlockDevice = 1;
inline constexpr uint32_t kWireDirectory = 2;
inline constexpr uint32_t kWireRegularFile = 4;

// Sends one message; false on any transport error.
inline bool SendMessage(int fd, MessageHeader header, std::string_view payload) {
  if (payload.size() > kMaxPayload) return false;
  header.magic = kMagic;
  header.version = kProtocolVersion;
  header.payload_length = static_cast<uint32_t>(payload.size());
  struct iovec iov[2];
  iov[0].iov_base = &header;
  iov[0].iov_len = sizeof(header);
  iov[1].iov_base = const_cast<char*>(payload.data());
  iov[1].iov_len = payload.size();
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = iov;
  msg.msg_iovlen = payload.empty() ? 1 : 2;
  ssize_t sent;
  do {
    sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  return sent == static_cast<ssize_t>(sizeof(header) + payload.size());
}

// Receives one message; false on end of stream, transport error or a malformed message.
inline bool ReceiveMessage(int fd, MessageHeader* header, std::string* payload) {
  std::string buffer(sizeof(MessageHeader) + kMaxPayload, '\0');
  struct iovec iov;
  iov.iov_base = buffer.data();
  iov.iov_len = buffer.size();
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ssize_t received;
  do {
    received = ::recvmsg(fd, &msg, 0);
  } while (received < 0 && errno == EINTR);
  if (received < static_cast<ssize_t>(sizeof(MessageHeader)) || (msg.msg_flags & MSG_TRUNC)) {
    return false;
  }
  std::memcpy(header, buffer.data(), sizeof(MessageHeader));
  if (header->magic != kMagic || header->version != kProtocolVersion ||
      header->payload_length != static_cast<size_t>(received) - sizeof(MessageHeader)) {
    return false;
  }
  payload->assign(buffer.data() + sizeof(MessageHeader), header->payload_length);
  return true;
}

// Connects a SOCK_SEQPACKET socket to `path`; returns the fd or -errno.
inline int ConnectSocket(const std::string& path) {
  struct sockaddr_un address;
  std::memset(&address, 0, sizeof(address));
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) return -ENAMETOOLONG;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (::connect(fd, reinterpret_cast<const struct sockaddr*>(&address), sizeof(address)) != 0) {
    const int error = errno;
    ::close(fd);
    return -error;
  }
  return fd;
}

}  // namespace cbt::blksnap::remote

#endif  // CBT_AGENT_BLKSNAP_REMOTE_PROTOCOL_H_
