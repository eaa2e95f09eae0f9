// FakeContext: an IoContext for driving a Target on the test thread, with a real io_uring for
// the target's backing I/O; completions are recorded instead of committed to a ublk queue.
#ifndef CBT_TESTS_UBLK_FAKE_IO_CONTEXT_H_
#define CBT_TESTS_UBLK_FAKE_IO_CONTEXT_H_

#include <liburing.h>

#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "ublk/queue.h"
#include "ublk/target.h"

namespace cbt::ublk {

class FakeContext : public IoContext {
 public:
  explicit FakeContext(int queue_id = 0, int depth = 8) : queue_id_(queue_id), depth_(depth) {
    EXPECT_EQ(io_uring_queue_init(16, &ring_, 0), 0);
  }
  ~FakeContext() override { io_uring_queue_exit(&ring_); }

  io_uring* ring() override { return &ring_; }
  uint64_t TargetUserData(int tag, uint32_t sub) override { return EncodeTargetUserData(tag, sub); }
  void Complete(int tag, int result) override { completions.emplace_back(tag, result); }
  int queue_id() const override { return queue_id_; }
  int queue_depth() const override { return depth_; }

  // Runs the ring, feeding target completions back, until `count` requests completed.
  void RunUntil(Target& target, size_t count) {
    while (completions.size() < count) {
      ASSERT_GE(io_uring_submit_and_wait(&ring_, 1), 0);
      io_uring_cqe* cqe;
      while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
        uint64_t ud = cqe->user_data;
        int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        ASSERT_TRUE(ud & kTargetUserDataBit);
        target.OnTargetCompletion(*this, TargetUserDataTag(ud), TargetUserDataSub(ud), res);
      }
    }
  }

  std::vector<std::pair<int, int>> completions;

 private:
  io_uring ring_{};
  int queue_id_;
  int depth_;
};

}  // namespace cbt::ublk

#endif  // CBT_TESTS_UBLK_FAKE_IO_CONTEXT_H_
