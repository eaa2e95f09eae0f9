// Filling IORING_OP_URING_CMD SQEs for ublk (liburing 2.3 has no io_uring_prep_uring_cmd).
//
// The command payload lives in the SQE's command area, which starts at byte 48 (sqe->cmd):
// 16 bytes in a normal SQE — enough for the 16-byte ublksrv_io_cmd — and 80 bytes in a
// 128-byte SQE (IORING_SETUP_SQE128), which the 32-byte ublksrv_ctrl_cmd needs.
#ifndef CBT_AGENT_UBLK_URING_CMD_H_
#define CBT_AGENT_UBLK_URING_CMD_H_

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ublk/uapi.h"

namespace cbt::ublk {

inline constexpr size_t kSqeCommandOffset = 48;
static_assert(offsetof(io_uring_sqe, addr3) == kSqeCommandOffset);
static_assert(sizeof(io_uring_sqe) == 64);

// The command area of `sqe`; 80 bytes usable when the ring has 128-byte SQEs, else 16.
inline uint8_t* SqeCommandArea(io_uring_sqe* sqe) {
  // Through an integer, so the compiler does not bound the area by the 64-byte struct.
  return reinterpret_cast<uint8_t*>(reinterpret_cast<uintptr_t>(sqe) + kSqeCommandOffset);
}

// A control command on a ring created with IORING_SETUP_SQE128.
inline void PrepareControlCommand(io_uring_sqe* sqe, int control_fd, uint32_t opcode,
                                  const ublksrv_ctrl_cmd& cmd, uint64_t user_data) {
  memset(static_cast<void*>(sqe), 0, kSqeCommandOffset);
  memset(SqeCommandArea(sqe), 0, 80);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = control_fd;
  sqe->cmd_op = opcode;
  sqe->user_data = user_data;
  memcpy(SqeCommandArea(sqe), &cmd, sizeof(cmd));
}

// An I/O command (FETCH_REQ, COMMIT_AND_FETCH_REQ) on a normal ring; `fd` is a registered file
// index when `fixed_file`, else a descriptor.
inline void PrepareIoCommand(io_uring_sqe* sqe, int fd, bool fixed_file, uint32_t opcode,
                             const ublksrv_io_cmd& cmd, uint64_t user_data) {
  memset(static_cast<void*>(sqe), 0, sizeof(*sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  if (fixed_file) sqe->flags = IOSQE_FIXED_FILE;
  sqe->cmd_op = opcode;
  sqe->user_data = user_data;
  memcpy(SqeCommandArea(sqe), &cmd, sizeof(cmd));
}

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_URING_CMD_H_
