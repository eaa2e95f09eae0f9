// UblkQueue: one ublk hardware queue served by one thread (copy mode).
//
// The thread maps the queue's read-only descriptor array from /dev/ublkcN (the descriptor is
// given, not opened here), creates its own io_uring (normal SQEs; COOP_TASKRUN when the kernel
// has it), registers /dev/ublkcN as fixed file 0, allocates one buffer of max_io_buf_bytes per
// tag and queues FETCH_REQ for every tag. Start() returns once those FETCHes are in the kernel,
// so START_DEV / END_USER_RECOVERY can then be sent — from another thread: they wait for the
// partition scan this thread must serve. The loop hands each request to the Target, sends
// COMMIT_AND_FETCH_REQ with the target's result, and ends when every tag came back aborted
// (-ENODEV: STOP_DEV, DEL_DEV) with nothing left in the target.
//
// The thread blocks every signal and asks for PR_SET_IO_FLUSHER (its allocations must not
// recurse into writeback through the device it serves; without CAP_SYS_RESOURCE that is EPERM,
// logged once and ignored).
//
// Quiesce()/Resume() may be called from any thread. After Quiesce() returns OK no request is in
// the target and requests that arrive are held, not started, until Resume() — what a snapshot
// take needs to switch CBT atomically with respect to writes. A queue must be resumed before
// STOP_DEV, which (with USER_RECOVERY) waits for every started request.
#ifndef CBT_AGENT_UBLK_QUEUE_H_
#define CBT_AGENT_UBLK_QUEUE_H_

#include <liburing.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ublk/control.h"
#include "ublk/target.h"
#include "ublk/uapi.h"

namespace cbt::ublk {

struct UblkQueueOptions {
  uint32_t dev_id = 0;
  uint16_t queue_id = 0;
  uint16_t depth = 0;               // the device's queue_depth
  uint32_t max_io_buf_bytes = 0;    // the device's (page-aligned) max_io_buf_bytes
  int char_fd = -1;                 // /dev/ublkcN; must stay open until Join() returned
  CommandEncoding encoding = CommandEncoding::kIoctl;  // of FETCH / COMMIT_AND_FETCH
};

// user_data layout on a queue ring: bit 63 = target I/O (tag in bits 0-15, sub in 16-47),
// bit 62 = the queue's own wake-up read, otherwise a ublk command of tag (bits 0-15).
inline constexpr uint64_t kTargetUserDataBit = uint64_t{1} << 63;
inline constexpr uint64_t kInternalUserDataBit = uint64_t{1} << 62;
inline constexpr uint64_t EncodeTargetUserData(int tag, uint32_t sub) {
  return kTargetUserDataBit | (uint64_t{sub} << 16) | (static_cast<uint64_t>(tag) & 0xffff);
}
inline constexpr int TargetUserDataTag(uint64_t user_data) {
  return static_cast<int>(user_data & 0xffff);
}
inline constexpr uint32_t TargetUserDataSub(uint64_t user_data) {
  return static_cast<uint32_t>(user_data >> 16);
}

class UblkQueue final : private IoContext {
 public:
  // `target` must outlive the queue.
  UblkQueue(const UblkQueueOptions& options, Target* target);
  // Makes the thread leave (RequestExit) if it still runs, and joins it.
  ~UblkQueue() override;
  UblkQueue(const UblkQueue&) = delete;
  UblkQueue& operator=(const UblkQueue&) = delete;

  // Starts the thread and waits for its setup: OK once every FETCH_REQ is queued. On error the
  // thread has already ended.
  absl::Status Start();
  // Waits for the thread to end (after the device stopped, or after RequestExit()).
  void Join();
  // Makes the thread leave its loop without waiting for aborts, e.g. when the device never
  // started. Pending FETCHes are cancelled by the ring teardown.
  void RequestExit();

  // See the header comment. On timeout the queue is resumed and DeadlineExceeded returned. OK at
  // once if the thread has ended.
  absl::Status Quiesce(absl::Duration timeout = absl::InfiniteDuration());
  void Resume();

  bool exited() const;
  uint16_t id() const { return options_.queue_id; }

 private:
  enum class TagState : uint8_t { kKernel, kHeld, kTarget, kAborted };

  // IoContext (queue thread only).
  io_uring* ring() override { return &ring_; }
  uint64_t TargetUserData(int tag, uint32_t sub) override {
    return EncodeTargetUserData(tag, sub);
  }
  void Complete(int tag, int result) override;
  int queue_id() const override { return options_.queue_id; }
  int queue_depth() const override { return options_.depth; }

  void ThreadMain();
  absl::Status Setup();
  void Loop();
  void Teardown();
  void Kick();
  io_uring_sqe* NextSqe();
  void QueueIoCommand(uint32_t nr, int tag, int result);
  void ArmWakeupRead();
  void HandleCompletion(uint64_t user_data, int res);
  void HandleUblkCompletion(int tag, int res);
  void Dispatch(int tag);
  void ApplyControl();
  void MaybePublishQuiesced();
  uint8_t* TagBuffer(int tag) const {
    return buffers_ + static_cast<size_t>(tag) * options_.max_io_buf_bytes;
  }

  const UblkQueueOptions options_;
  Target* const target_;
  std::thread thread_;
  int event_fd_ = -1;
  std::atomic<bool> exit_requested_{false};
  std::atomic<uint64_t> control_seq_{0};  // bumped by Quiesce/Resume/RequestExit

  mutable absl::Mutex mu_;
  bool setup_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status setup_status_ ABSL_GUARDED_BY(mu_);
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  bool quiesce_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool quiesced_ ABSL_GUARDED_BY(mu_) = false;

  // Queue-thread state.
  io_uring ring_{};
  bool ring_ready_ = false;
  bool fixed_file_ = false;
  const ublksrv_io_desc* descs_ = nullptr;
  size_t descs_size_ = 0;
  uint8_t* buffers_ = nullptr;
  size_t buffers_size_ = 0;
  uint64_t wakeup_value_ = 0;
  std::vector<TagState> tags_;
  std::deque<int> held_;
  int in_target_ = 0;
  int aborted_ = 0;
  bool holding_ = false;
  uint64_t seen_seq_ = 0;
  uint64_t published_seq_ = ~uint64_t{0};
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_QUEUE_H_
