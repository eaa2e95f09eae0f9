#include "server/event_hub.h"

namespace cbt::agent {

std::optional<SnapshotEvent> EventHub::Subscription::Next(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
               [&] { return !queue_.empty() || closed_; });
  if (queue_.empty()) return std::nullopt;
  SnapshotEvent event = std::move(queue_.front());
  queue_.pop_front();
  return event;
}

bool EventHub::Subscription::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_ && queue_.empty();
}

bool EventHub::Subscription::overflowed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return overflowed_;
}

void EventHub::Publish(const SnapshotEvent& event) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& subscription : subscriptions_) {
    if (subscription->filter_ && !(*subscription->filter_ == event.snapshot_id)) continue;
    std::lock_guard<std::mutex> sub_lock(subscription->mu_);
    if (subscription->closed_) continue;
    if (subscription->queue_.size() >= queue_limit_) {
      subscription->overflowed_ = true;
      subscription->closed_ = true;
    } else {
      subscription->queue_.push_back(event);
    }
    subscription->cv_.notify_all();
  }
}

std::shared_ptr<EventHub::Subscription> EventHub::Subscribe(std::optional<Uuid> filter) {
  auto subscription = std::make_shared<Subscription>();
  subscription->filter_ = filter;
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) {
    subscription->closed_ = true;
  } else {
    subscriptions_.insert(subscription);
  }
  return subscription;
}

void EventHub::Unsubscribe(const std::shared_ptr<Subscription>& subscription) {
  std::lock_guard<std::mutex> lock(mu_);
  subscriptions_.erase(subscription);
}

void EventHub::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shut_down_ = true;
  for (const auto& subscription : subscriptions_) {
    std::lock_guard<std::mutex> sub_lock(subscription->mu_);
    subscription->closed_ = true;
    subscription->cv_.notify_all();
  }
  subscriptions_.clear();
}

}  // namespace cbt::agent
