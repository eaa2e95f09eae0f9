// The seam between a ublk queue (kernel-facing: fetch, commit) and the I/O logic behind it.
//
// A queue thread hands every request to Target::Submit with an IoContext. The target either
// completes it at once (ctx.Complete) or queues backing I/O on the queue's own ring
// (ctx.ring(), user_data from ctx.TargetUserData) and completes it from OnTargetCompletion.
// Everything runs on the queue thread: a target shared by several queues sees concurrent calls
// from different queue threads (one IoContext each) and keys its per-request state by
// (ctx.queue_id(), tag).
//
// Result rules (the kernel's): READ/WRITE complete with the bytes done or -errno — fewer bytes
// than asked completes that part and the kernel re-issues the rest; a READ completing with 0
// becomes -EIO. FLUSH, DISCARD and WRITE_ZEROES complete with 0 or -errno.
#ifndef CBT_AGENT_UBLK_TARGET_H_
#define CBT_AGENT_UBLK_TARGET_H_

#include <liburing.h>

#include <cstdint>

namespace cbt::ublk {

struct IoRequest {
  int tag = 0;
  uint8_t op = 0;           // kIoOp* (uapi.h)
  uint32_t flags = 0;       // kIoF* (uapi.h), as in op_flags: FUA is 1 << 13
  uint64_t start_sector = 0;  // 512-byte sectors
  uint32_t nr_sectors = 0;
  uint8_t* buffer = nullptr;  // the tag's buffer: data of a WRITE, destination of a READ
};

// Given by the queue to the target; valid on the queue thread only.
class IoContext {
 public:
  virtual io_uring* ring() = 0;  // to queue backing I/O SQEs on the same ring
  // user_data marking target I/O (bit 63) for request `tag`; `sub` (32 bits) is the target's.
  virtual uint64_t TargetUserData(int tag, uint32_t sub) = 0;
  // Bytes or -errno; the queue sends COMMIT_AND_FETCH_REQ. Exactly once per Submit.
  virtual void Complete(int tag, int result) = 0;
  virtual int queue_id() const = 0;
  virtual int queue_depth() const = 0;
  virtual ~IoContext() = default;
};

class Target {
 public:
  virtual ~Target() = default;
  // Starts a request; complete now or later.
  virtual void Submit(IoContext& ctx, const IoRequest& request) = 0;
  // A target SQE finished (its user_data came from ctx.TargetUserData(tag, sub)).
  virtual void OnTargetCompletion(IoContext& ctx, int tag, uint32_t sub, int res) = 0;
};

// An SQE on the context's ring; when the SQ is full, submits what is queued first. nullptr only
// if the kernel refuses the submission.
inline io_uring_sqe* GetSqe(IoContext& ctx) {
  io_uring_sqe* sqe = io_uring_get_sqe(ctx.ring());
  if (sqe == nullptr) {
    io_uring_submit(ctx.ring());
    sqe = io_uring_get_sqe(ctx.ring());
  }
  return sqe;
}

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_TARGET_H_
