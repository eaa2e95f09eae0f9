// The stream limiter: the count, the time limit and the watchdog for stalled streams.
#include "server/stream_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace cbt::agent {
namespace {

TEST(StreamLimiterTest, RefusesStreamsOverTheCountUntilOneEnds) {
  StreamLimiter limiter(2, absl::InfiniteDuration());
  auto a = limiter.Admit(nullptr);
  auto b = limiter.Admit(nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = limiter.Admit(nullptr);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(limiter.open(), 2u);
  a->reset();
  EXPECT_EQ(limiter.open(), 1u);
  EXPECT_TRUE(limiter.Admit(nullptr).ok());
  EXPECT_FALSE((*b)->Expired()) << "no time limit";
}

TEST(StreamLimiterTest, TicketsExpireAndStalledStreamsAreCancelledAfterTheGrace) {
  StreamLimiter limiter(4, absl::Milliseconds(50), absl::Milliseconds(100));
  std::atomic<int> cancelled{0};
  auto stalled = limiter.Admit([&] { ++cancelled; });
  ASSERT_TRUE(stalled.ok());
  EXPECT_FALSE((*stalled)->Expired());
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  EXPECT_TRUE((*stalled)->Expired());
  EXPECT_EQ(cancelled.load(), 0) << "the handler gets the grace period to end it itself";
  for (int i = 0; i < 100 && cancelled.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(cancelled.load(), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(cancelled.load(), 1) << "once";
}

TEST(StreamLimiterTest, EndedStreamsAreNeverCancelled) {
  StreamLimiter limiter(4, absl::Milliseconds(10), absl::Milliseconds(10));
  std::atomic<int> cancelled{0};
  {
    auto ticket = limiter.Admit([&] { ++cancelled; });
    ASSERT_TRUE(ticket.ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(cancelled.load(), 0);
}

}  // namespace
}  // namespace cbt::agent
