// EventHub: fans snapshot events out from backend threads to WatchSnapshotEvents streams.
//
// Publish() never blocks on a subscriber: each subscription has a bounded queue, and a
// subscriber that falls behind by more than its bound is closed with `overflowed` set, so it
// can tell the client to resubscribe rather than silently miss events.
#ifndef CBT_AGENT_SERVER_EVENT_HUB_H_
#define CBT_AGENT_SERVER_EVENT_HUB_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "absl/time/time.h"
#include "backend/backend.h"

namespace cbt::agent {

class EventHub final : public EventSink {
 public:
  class Subscription {
   public:
    // The next event, or nullopt after `timeout` or once the subscription is closed.
    std::optional<SnapshotEvent> Next(absl::Duration timeout);
    bool closed() const;
    bool overflowed() const;

   private:
    friend class EventHub;
    std::optional<Uuid> filter_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<SnapshotEvent> queue_;
    bool closed_ = false;
    bool overflowed_ = false;
  };

  explicit EventHub(size_t queue_limit = 1024) : queue_limit_(queue_limit) {}

  void Publish(const SnapshotEvent& event) override;

  // `filter`: only events of that snapshot; nullopt: every event.
  std::shared_ptr<Subscription> Subscribe(std::optional<Uuid> filter);
  void Unsubscribe(const std::shared_ptr<Subscription>& subscription);

  // Closes every subscription; later Subscribe() calls get closed ones.
  void Shutdown();

 private:
  const size_t queue_limit_;
  std::mutex mu_;
  bool shut_down_ = false;
  std::set<std::shared_ptr<Subscription>> subscriptions_;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_EVENT_HUB_H_
