#include "ublk/write_preparer.h"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <system_error>
#include <utility>

#include "ublk/file_target.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace cbt::ublk {

WritePreparer::WritePreparer(WriteObserver* observer, int max_queues)
    : observer_(observer), max_queues_(max_queues), slots_(new std::unique_ptr<QueueSlot>[max_queues]) {}

WritePreparer::~WritePreparer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& thread : threads_) thread.join();
  for (int q = 0; q < max_queues_; ++q) {
    if (slots_[q] && slots_[q]->event_fd >= 0) close(slots_[q]->event_fd);
  }
}

uint64_t WritePreparer::deferred_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return deferred_count_;
}

WritePreparer::QueueSlot* WritePreparer::SlotFor(int queue_id) {
  if (queue_id < 0 || queue_id >= max_queues_) return nullptr;
  std::unique_ptr<QueueSlot>& slot = slots_[queue_id];
  if (!slot) slot = std::make_unique<QueueSlot>();
  if (slot->event_fd < 0) slot->event_fd = eventfd(0, EFD_CLOEXEC);
  return slot->event_fd < 0 ? nullptr : slot.get();
}

bool WritePreparer::ArmWakeRead(IoContext& ctx, QueueSlot& slot) {
  io_uring_sqe* sqe = GetSqe(ctx);
  if (sqe == nullptr) return false;
  io_uring_prep_read(sqe, slot.event_fd, &slot.wake_value, sizeof(slot.wake_value), 0);
  sqe->user_data = ctx.TargetUserData(0, kPreparedSub);
  slot.armed = true;
  return true;
}

bool WritePreparer::Defer(IoContext& ctx, const IoRequest& request, uint64_t offset,
                          uint64_t length) {
  QueueSlot* slot = SlotFor(ctx.queue_id());
  if (slot == nullptr) return false;
  if (!slot->armed && !ArmWakeRead(ctx, *slot)) return false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (threads_.empty() && !StartThreadsLocked()) return false;
    jobs_.push_back(Job{ctx.queue_id(), request, offset, length});
    ++deferred_count_;
  }
  work_cv_.notify_one();
  return true;
}

std::vector<WritePreparer::Prepared> WritePreparer::TakeFinished(IoContext& ctx) {
  std::vector<Prepared> finished;
  QueueSlot* slot = SlotFor(ctx.queue_id());
  if (slot == nullptr) return finished;
  slot->armed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished.swap(slot->finished);
  }
  // Re-armed before the requests are issued; a signal that arrives in between is not lost (the
  // eventfd counts), and the list is read again on that completion.
  ArmWakeRead(ctx, *slot);
  return finished;
}

bool WritePreparer::StartThreadsLocked() {
  // Like the queue threads: no process-directed signal may land here.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  try {
    for (int i = 0; i < kThreads; ++i) threads_.emplace_back([this] { ThreadMain(); });
  } catch (const std::system_error&) {
    // Out of threads: one is enough to run the jobs; with none the queue copies by itself.
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return !threads_.empty();
}

void WritePreparer::ThreadMain() {
  pthread_setname_np(pthread_self(), "ublk-prepare");
  // The copies write to the diff storage on behalf of the device: reclaim must not recurse into
  // writeback through it (best effort, as for the queue threads).
  (void)prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, and nothing left
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    const int result = observer_->BeforeWrite(job.offset, job.length);
    lock.lock();
    QueueSlot& slot = *slots_[job.queue_id];
    slot.finished.push_back(Prepared{job.request, result < 0 ? result : -result});
    const uint64_t one = 1;
    ssize_t n = write(slot.event_fd, &one, sizeof(one));  // cannot overflow in practice
    (void)n;
  }
}

}  // namespace cbt::ublk
