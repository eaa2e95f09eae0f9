#include "ublk/queue.h"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "backend/errno_status.h"
#include "backend/log.h"
#include "ublk/uring_cmd.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace cbt::ublk {
namespace {

constexpr uint64_t kWakeupUserData = kInternalUserDataBit | 1;
constexpr unsigned kCqeBatch = 64;

std::atomic<bool> io_flusher_warned{false};

unsigned RingEntries(unsigned depth) {
  // One ublk command per tag, one target SQE per tag, the wake-up read; rounded up to 2^n.
  unsigned want = 2 * depth + 2;
  unsigned entries = 8;
  while (entries < want) entries <<= 1;
  return entries;
}

}  // namespace

UblkQueue::UblkQueue(const UblkQueueOptions& options, Target* target)
    : options_(options), target_(target) {}

UblkQueue::~UblkQueue() {
  if (thread_.joinable()) {
    RequestExit();
    thread_.join();
  }
  if (event_fd_ >= 0) close(event_fd_);
}

absl::Status UblkQueue::Start() {
  if (options_.depth == 0 || options_.depth > kMaxQueueDepth || options_.max_io_buf_bytes == 0 ||
      options_.char_fd < 0 || target_ == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("ublk device ", options_.dev_id, " queue ",
                                                   options_.queue_id, ": bad queue options"));
  }
  if (thread_.joinable()) return absl::FailedPreconditionError("ublk queue already started");
  event_fd_ = eventfd(0, EFD_CLOEXEC);
  if (event_fd_ < 0) {
    return agent::ErrnoStatus(errno, absl::StrCat("eventfd for ublk device ", options_.dev_id,
                                                  " queue ", options_.queue_id));
  }
  // The thread starts with every signal blocked: no window in which a process-directed signal
  // (SIGTERM meant for the control thread's sigwait) could land on it.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  thread_ = std::thread([this] { ThreadMain(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);

  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&setup_done_));
    status = setup_status_;
  }
  if (!status.ok()) thread_.join();
  return status;
}

void UblkQueue::Join() {
  if (thread_.joinable()) thread_.join();
}

void UblkQueue::RequestExit() {
  exit_requested_.store(true, std::memory_order_release);
  control_seq_.fetch_add(1, std::memory_order_acq_rel);
  Kick();
}

bool UblkQueue::exited() const {
  absl::MutexLock lock(&mu_);
  return exited_;
}

void UblkQueue::Kick() {
  if (event_fd_ < 0) return;
  uint64_t one = 1;
  // The counter cannot overflow in practice; EAGAIN would mean a wake-up is pending anyway.
  ssize_t n = write(event_fd_, &one, sizeof(one));
  (void)n;
}

absl::Status UblkQueue::Quiesce(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (exited_) return absl::OkStatus();
    quiesce_requested_ = true;
    quiesced_ = false;
  }
  control_seq_.fetch_add(1, std::memory_order_acq_rel);
  Kick();
  mu_.Lock();
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return quiesced_ || exited_; };
  bool ok = mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  if (!ok) {
    quiesce_requested_ = false;
    quiesced_ = false;
  }
  mu_.Unlock();
  if (ok) return absl::OkStatus();
  control_seq_.fetch_add(1, std::memory_order_acq_rel);
  Kick();
  return absl::DeadlineExceededError(absl::StrCat(
      "quiesce of ublk device ", options_.dev_id, " queue ", options_.queue_id, " timed out after ",
      absl::FormatDuration(timeout), " with requests still in the target"));
}

void UblkQueue::Resume() {
  {
    absl::MutexLock lock(&mu_);
    quiesce_requested_ = false;
    quiesced_ = false;
  }
  control_seq_.fetch_add(1, std::memory_order_acq_rel);
  Kick();
}

// ---- queue thread ----------------------------------------------------------------------------

void UblkQueue::ThreadMain() {
  std::string name = absl::StrCat("ublk", options_.dev_id, "q", options_.queue_id);
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
  if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0) {
    int err = errno;
    if (!io_flusher_warned.exchange(true)) {
      agent::LogWarning("ublk", "prctl(PR_SET_IO_FLUSHER) failed for the queue threads: %s; memory reclaim may "
                 "write back through the served device",
                 strerror(err));
    }
  }
  absl::Status status = Setup();
  {
    absl::MutexLock lock(&mu_);
    setup_status_ = status;
    setup_done_ = true;
    if (!status.ok()) exited_ = true;
  }
  if (!status.ok()) {
    Teardown();
    return;
  }
  Loop();
  Teardown();
  absl::MutexLock lock(&mu_);
  exited_ = true;
}

absl::Status UblkQueue::Setup() {
  const std::string where =
      absl::StrCat("ublk device ", options_.dev_id, " queue ", options_.queue_id);
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  descs_size_ = CmdBufSize(options_.depth, page);
  void* descs = mmap(nullptr, descs_size_, PROT_READ, MAP_SHARED | MAP_POPULATE, options_.char_fd,
                     static_cast<off_t>(CmdBufOffset(options_.queue_id, page)));
  if (descs == MAP_FAILED) {
    descs_size_ = 0;
    return agent::ErrnoStatus(errno, absl::StrCat("mmap of the descriptors of ", where));
  }
  descs_ = static_cast<const ublksrv_io_desc*>(descs);

  buffers_size_ = static_cast<size_t>(options_.depth) * options_.max_io_buf_bytes;
  void* buffers = mmap(nullptr, buffers_size_, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buffers == MAP_FAILED) {
    buffers_size_ = 0;
    return agent::ErrnoStatus(errno, absl::StrCat("I/O buffers of ", where));
  }
  buffers_ = static_cast<uint8_t*>(buffers);
  // Pages touched by I/O stay resident (no reclaim recursion through the device); best effort.
  (void)mlock2(buffers_, buffers_size_, MLOCK_ONFAULT);

  unsigned entries = RingEntries(options_.depth);
  int ret = io_uring_queue_init(entries, &ring_, IORING_SETUP_COOP_TASKRUN);
  if (ret == -EINVAL) ret = io_uring_queue_init(entries, &ring_, 0);  // before 5.19
  if (ret < 0) return agent::ErrnoStatus(-ret, absl::StrCat("io_uring_queue_init for ", where));
  ring_ready_ = true;
  fixed_file_ = io_uring_register_files(&ring_, &options_.char_fd, 1) == 0;

  tags_.assign(options_.depth, TagState::kKernel);
  ArmWakeupRead();
  for (int tag = 0; tag < options_.depth; ++tag) QueueIoCommand(kIoFetchReq, tag, 0);
  ret = io_uring_submit(&ring_);
  if (ret < 0) return agent::ErrnoStatus(-ret, absl::StrCat("FETCH_REQ submission for ", where));
  // FETCH_REQ is handled inline at submission: a refused one (bad queue id, a second server) is
  // already in the CQ. Look without consuming; anything else is left to the loop.
  unsigned head;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    if (!(cqe->user_data & (kTargetUserDataBit | kInternalUserDataBit)) && cqe->res < 0) {
      return agent::ErrnoStatus(-cqe->res, absl::StrCat("FETCH_REQ of tag ",
                                                        cqe->user_data & 0xffff, " on ", where));
    }
  }
  return absl::OkStatus();
}

void UblkQueue::Teardown() {
  bool target_idle = in_target_ == 0;
  if (ring_ready_) {
    io_uring_queue_exit(&ring_);
    ring_ready_ = false;
  }
  if (descs_ != nullptr) {
    munmap(const_cast<ublksrv_io_desc*>(descs_), descs_size_);
    descs_ = nullptr;
  }
  // After a forced exit, target I/O may still write into the buffers while the ring winds down
  // asynchronously: then they are leaked rather than unmapped under it.
  if (buffers_ != nullptr && target_idle) {
    munmap(buffers_, buffers_size_);
    buffers_ = nullptr;
  }
}

io_uring_sqe* UblkQueue::NextSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    int ret = io_uring_submit(&ring_);
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
      agent::LogWarning("ublk", "ublk device %u queue %u: io_uring_submit: %s", options_.dev_id,
                 options_.queue_id, strerror(-ret));
    }
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void UblkQueue::QueueIoCommand(uint32_t nr, int tag, int result) {
  ublksrv_io_cmd cmd{};
  cmd.q_id = options_.queue_id;
  cmd.tag = static_cast<uint16_t>(tag);
  cmd.result = result;
  cmd.addr = reinterpret_cast<uintptr_t>(TagBuffer(tag));
  uint32_t opcode = nr;
  if (options_.encoding == CommandEncoding::kIoctl) {
    opcode = nr == kIoFetchReq ? kUIoFetchReq : kUIoCommitAndFetchReq;
  }
  PrepareIoCommand(NextSqe(), fixed_file_ ? 0 : options_.char_fd, fixed_file_, opcode, cmd,
                   static_cast<uint64_t>(tag));
}

void UblkQueue::ArmWakeupRead() {
  io_uring_sqe* sqe = NextSqe();
  io_uring_prep_read(sqe, event_fd_, &wakeup_value_, sizeof(wakeup_value_), 0);
  sqe->user_data = kWakeupUserData;
}

void UblkQueue::Loop() {
  struct Done {
    uint64_t user_data;
    int res;
  };
  Done done[kCqeBatch];
  io_uring_cqe* cqes[kCqeBatch];
  while (!exit_requested_.load(std::memory_order_acquire)) {
    if (aborted_ == options_.depth && in_target_ == 0) break;  // stopped: every tag aborted
    int ret = io_uring_submit_and_wait(&ring_, 1);
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
      agent::LogWarning("ublk", "ublk device %u queue %u: io_uring_submit_and_wait: %s; queue thread exits",
                 options_.dev_id, options_.queue_id, strerror(-ret));
      break;
    }
    ApplyControl();
    unsigned n;
    while ((n = io_uring_peek_batch_cqe(&ring_, cqes, kCqeBatch)) > 0) {
      for (unsigned i = 0; i < n; ++i) done[i] = {cqes[i]->user_data, cqes[i]->res};
      io_uring_cq_advance(&ring_, n);
      for (unsigned i = 0; i < n; ++i) HandleCompletion(done[i].user_data, done[i].res);
    }
    ApplyControl();
  }
}

void UblkQueue::HandleCompletion(uint64_t user_data, int res) {
  if (user_data & kTargetUserDataBit) {
    target_->OnTargetCompletion(*this, TargetUserDataTag(user_data), TargetUserDataSub(user_data),
                                res);
  } else if (user_data == kWakeupUserData) {
    if (res < 0 && res != -EINTR && res != -EAGAIN && res != -ECANCELED) {
      agent::LogWarning("ublk", "ublk device %u queue %u: wake-up read: %s", options_.dev_id, options_.queue_id,
                 strerror(-res));
    }
    ArmWakeupRead();
  } else {
    HandleUblkCompletion(static_cast<int>(user_data & 0xffff), res);
  }
}

void UblkQueue::HandleUblkCompletion(int tag, int res) {
  if (tag >= options_.depth || tags_[tag] != TagState::kKernel) {
    agent::LogWarning("ublk", "ublk device %u queue %u: unexpected completion for tag %d (res %d)",
               options_.dev_id, options_.queue_id, tag, res);
    return;
  }
  if (res == kIoResOk) {
    if (holding_) {
      tags_[tag] = TagState::kHeld;
      held_.push_back(tag);
    } else {
      Dispatch(tag);
    }
    return;
  }
  if (res != kIoResAbort) {
    // EINVAL/EBUSY here mean a protocol error (wrong task, double fetch): the tag is lost.
    agent::LogWarning("ublk", "ublk device %u queue %u tag %d: FETCH/COMMIT_AND_FETCH failed: %s",
               options_.dev_id, options_.queue_id, tag, strerror(-res));
  }
  tags_[tag] = TagState::kAborted;
  ++aborted_;
}

void UblkQueue::Dispatch(int tag) {
  ublksrv_io_desc desc;
  memcpy(&desc, &descs_[tag], sizeof(desc));
  IoRequest request;
  request.tag = tag;
  request.op = IoDescOp(desc);
  request.flags = IoDescFlags(desc);
  request.start_sector = desc.start_sector;
  request.nr_sectors = desc.nr_sectors;
  request.buffer = TagBuffer(tag);
  tags_[tag] = TagState::kTarget;
  ++in_target_;
  target_->Submit(*this, request);
}

void UblkQueue::Complete(int tag, int result) {
  if (tag < 0 || tag >= options_.depth || tags_[tag] != TagState::kTarget) {
    agent::LogWarning("ublk", "ublk device %u queue %u: target completed tag %d that it does not hold",
               options_.dev_id, options_.queue_id, tag);
    return;
  }
  tags_[tag] = TagState::kKernel;
  --in_target_;
  QueueIoCommand(kIoCommitAndFetchReq, tag, result);
  if (holding_ && in_target_ == 0) MaybePublishQuiesced();
}

void UblkQueue::ApplyControl() {
  uint64_t seq = control_seq_.load(std::memory_order_acquire);
  if (seq != seen_seq_) {
    seen_seq_ = seq;
    absl::MutexLock lock(&mu_);
    holding_ = quiesce_requested_;
  }
  if (!holding_ && !held_.empty()) {
    std::deque<int> held;
    held.swap(held_);
    for (int tag : held) Dispatch(tag);
  }
  if (holding_) MaybePublishQuiesced();
}

void UblkQueue::MaybePublishQuiesced() {
  if (in_target_ != 0 || published_seq_ == seen_seq_) return;
  published_seq_ = seen_seq_;
  absl::MutexLock lock(&mu_);
  if (quiesce_requested_) quiesced_ = true;
}

}  // namespace cbt::ublk
