// Limits on the server-streaming RPCs (WatchSnapshotEvents, ReadCbtMap, GetChangedExtents):
// how many may be open at once (--max_concurrent_streams) and for how long each may run
// (--max_stream_duration).
//
// A stream over the count is refused with RESOURCE_EXHAUSTED before it starts. A stream past
// its duration is ended by its handler, which checks Ticket::Expired() between messages, with
// DEADLINE_EXCEEDED ("resume from ..."/"resubscribe"). A handler stuck in a write because the
// client stopped reading cannot check; the limiter's watchdog thread calls the ticket's
// `cancel` (ServerContext::TryCancel) `grace` after the deadline, so a stalled client cannot
// hold a stream slot and a thread forever.
#ifndef CBT_AGENT_SERVER_STREAM_LIMITER_H_
#define CBT_AGENT_SERVER_STREAM_LIMITER_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cbt::agent {

class StreamLimiter {
 public:
  // An open stream; destroying it frees the slot.
  class Ticket {
   public:
    ~Ticket();
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    bool Expired() const { return absl::Now() >= deadline_; }

   private:
    friend class StreamLimiter;
    Ticket(StreamLimiter* limiter, uint64_t id, absl::Time deadline)
        : limiter_(limiter), id_(id), deadline_(deadline) {}
    StreamLimiter* const limiter_;
    const uint64_t id_;
    const absl::Time deadline_;
  };

  // `max_duration` absl::InfiniteDuration(): streams may run for ever.
  StreamLimiter(size_t max_streams, absl::Duration max_duration,
                absl::Duration grace = absl::Seconds(5));
  ~StreamLimiter();  // every ticket must be gone by then

  // RESOURCE_EXHAUSTED when max_streams are open. `cancel` may be called from the watchdog
  // thread while the ticket lives, never after.
  absl::StatusOr<std::unique_ptr<Ticket>> Admit(std::function<void()> cancel);

  size_t open() const;
  size_t max_streams() const { return max_streams_; }
  absl::Duration max_duration() const { return max_duration_; }

 private:
  struct Open {
    absl::Time cancel_at;
    std::function<void()> cancel;
    bool cancelled = false;
  };
  void Release(uint64_t id);
  void Watch();

  const size_t max_streams_;
  const absl::Duration max_duration_;
  const absl::Duration grace_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Open> open_;
  uint64_t next_id_ = 1;
  bool stop_ = false;
  std::thread watchdog_;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_STREAM_LIMITER_H_
