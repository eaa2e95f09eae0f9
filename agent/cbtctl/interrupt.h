// Ctrl-C (SIGINT) and SIGTERM during a stream cancel the call instead of killing the process,
// so that the stream ends cleanly (progress line cleared, output flushed).
//
// BlockInterruptSignals() must run before the channel is made so that gRPC's threads inherit
// the mask; an InterruptCanceller then waits for the signals on its own thread.
#ifndef CBT_AGENT_CBTCTL_INTERRUPT_H_
#define CBT_AGENT_CBTCTL_INTERRUPT_H_

#include <atomic>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

namespace cbt::cbtctl {

void BlockInterruptSignals();

class InterruptCanceller {
 public:
  InterruptCanceller();
  ~InterruptCanceller();
  InterruptCanceller(const InterruptCanceller&) = delete;
  InterruptCanceller& operator=(const InterruptCanceller&) = delete;

  // The call a signal cancels from now on (null: none). Cancels at once after a signal.
  void Watch(grpc::ClientContext* context);
  bool interrupted() const { return interrupted_; }

 private:
  void Run();

  std::mutex mu_;
  grpc::ClientContext* context_ = nullptr;
  std::atomic<bool> interrupted_{false};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_INTERRUPT_H_
