#include "cbtctl/interrupt.h"

#include <pthread.h>
#include <signal.h>

namespace cbt::cbtctl {
namespace {

sigset_t InterruptSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void BlockInterruptSignals() {
  const sigset_t set = InterruptSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

InterruptCanceller::InterruptCanceller() : thread_([this] { Run(); }) {}

InterruptCanceller::~InterruptCanceller() {
  stopping_ = true;
  // Wakes the sigwait() below; the signal is blocked everywhere, so only that thread takes it.
  pthread_kill(thread_.native_handle(), SIGTERM);
  thread_.join();
}

void InterruptCanceller::Watch(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  context_ = context;
  if (context_ != nullptr && interrupted_) context_->TryCancel();
}

void InterruptCanceller::Run() {
  const sigset_t set = InterruptSignals();
  while (true) {
    int signal = 0;
    if (sigwait(&set, &signal) != 0) continue;
    if (stopping_) return;
    std::lock_guard<std::mutex> lock(mu_);
    interrupted_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
}

}  // namespace cbt::cbtctl
