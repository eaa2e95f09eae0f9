// WritePreparer: runs the slow part of a write - WriteObserver::BeforeWrite when it may block,
// i.e. the copy-on-write of chunks a held snapshot has not preserved yet - on its own threads,
// and hands the request back to its queue thread when it is done. Without it a 256 KiB chunk
// copy on the queue thread stalls every other request of the queue behind it; with it reads,
// and writes to chunks already preserved, keep flowing (blksnap's COW does not block other I/O
// either: reference/blksnap.md §7).
//
// Flow, for a request the target decided to defer (queue thread):
//   Defer(ctx, request)       queues it for a preparation thread; the first call on a queue
//                             also arms a read of that queue's eventfd on ctx.ring(), with
//                             user_data ctx.TargetUserData(0, kPreparedSub)
//   (preparation thread)      observer->BeforeWrite(offset, length) -> result; the request goes
//                             on its queue's finished list and the eventfd is signalled
//   TakeFinished(ctx)         on that read's completion: re-arms it and returns the finished
//                             requests with their BeforeWrite results, for the target to issue
//                             (or fail) on the queue thread as it would have without deferring.
// A deferred request stays "in the target" for the queue, so Quiesce() waits for it.
//
// Two requests for the same chunk may be prepared on two threads at once: the observer must be
// thread-safe (CowStore waits for the one copy). The destructor joins the threads after the jobs
// already queued are done; the observer must stay alive until then.
#ifndef CBT_AGENT_UBLK_WRITE_PREPARER_H_
#define CBT_AGENT_UBLK_WRITE_PREPARER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ublk/target.h"

namespace cbt::ublk {

class WriteObserver;

class WritePreparer {
 public:
  // The sub (TargetUserData) of the eventfd read; the target passes such completions to
  // TakeFinished. Distinct from every sub a target uses for its own I/O.
  static constexpr uint32_t kPreparedSub = 0xfffffff0u;
  static constexpr int kThreads = 2;

  struct Prepared {
    IoRequest request;
    int result = 0;  // BeforeWrite's: 0 or -errno
  };

  // `observer` is not owned. `max_queues` bounds the queue ids seen.
  WritePreparer(WriteObserver* observer, int max_queues);
  ~WritePreparer();
  WritePreparer(const WritePreparer&) = delete;
  WritePreparer& operator=(const WritePreparer&) = delete;

  // Queue thread. false only when the eventfd cannot be made, the read not armed or no thread
  // started: then the caller runs BeforeWrite itself.
  bool Defer(IoContext& ctx, const IoRequest& request, uint64_t offset, uint64_t length);
  // Queue thread, on the completion of the read armed by Defer (any result).
  std::vector<Prepared> TakeFinished(IoContext& ctx);

  uint64_t deferred_count() const;

 private:
  struct Job {
    int queue_id = 0;
    IoRequest request;
    uint64_t offset = 0;
    uint64_t length = 0;
  };
  // Per queue; `event_fd`, `wake_value` and `armed` are the queue thread's.
  struct QueueSlot {
    int event_fd = -1;
    uint64_t wake_value = 0;
    bool armed = false;
    std::vector<Prepared> finished;  // guarded by mu_
  };

  QueueSlot* SlotFor(int queue_id);
  bool ArmWakeRead(IoContext& ctx, QueueSlot& slot);
  // Starts the threads (mu_ held); false when not even one could be started.
  bool StartThreadsLocked();
  void ThreadMain();

  WriteObserver* const observer_;
  const int max_queues_;
  // Made by each queue's thread on its first Defer; read by the preparation threads under mu_
  // after a job of that queue was queued under mu_.
  std::unique_ptr<std::unique_ptr<QueueSlot>[]> slots_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::deque<Job> jobs_;         // guarded by mu_
  bool stopping_ = false;        // guarded by mu_
  uint64_t deferred_count_ = 0;  // guarded by mu_
  std::vector<std::thread> threads_;  // started on the first Defer, under mu_
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_WRITE_PREPARER_H_
