#include "server/stream_limiter.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cbt::agent {

StreamLimiter::Ticket::~Ticket() { limiter_->Release(id_); }

StreamLimiter::StreamLimiter(size_t max_streams, absl::Duration max_duration, absl::Duration grace)
    : max_streams_(max_streams), max_duration_(max_duration), grace_(grace) {
  if (max_duration_ != absl::InfiniteDuration()) watchdog_ = std::thread([this] { Watch(); });
}

StreamLimiter::~StreamLimiter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
}

absl::StatusOr<std::unique_ptr<StreamLimiter::Ticket>> StreamLimiter::Admit(
    std::function<void()> cancel) {
  const absl::Time deadline = absl::Now() + max_duration_;
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (open_.size() >= max_streams_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          max_streams_, " streams are open (--max_concurrent_streams); retry when one ends"));
    }
    id = next_id_++;
    open_[id] = Open{deadline + grace_, std::move(cancel)};
  }
  cv_.notify_all();
  return std::unique_ptr<Ticket>(new Ticket(this, id, deadline));
}

size_t StreamLimiter::open() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_.size();
}

void StreamLimiter::Release(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  open_.erase(id);
}

void StreamLimiter::Watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    const absl::Time now = absl::Now();
    absl::Time next = absl::InfiniteFuture();
    for (auto& [id, stream] : open_) {
      if (stream.cancelled) continue;
      if (now >= stream.cancel_at) {
        // Under the lock: the ticket (and so the call's context) cannot go away meanwhile.
        stream.cancelled = true;
        if (stream.cancel) stream.cancel();
      } else {
        next = std::min(next, stream.cancel_at);
      }
    }
    if (next == absl::InfiniteFuture()) {
      cv_.wait(lock);
    } else {
      cv_.wait_for(lock, absl::ToChronoNanoseconds(next - now));
    }
  }
}

}  // namespace cbt::agent
