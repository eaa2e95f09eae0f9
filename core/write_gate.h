// WriteGate: lets many threads mark a map concurrently at the cost of a few plain stores,
// while a rare exclusive section (switch, reset) waits until no marker is inside.
//
// It is an asymmetric reader/writer exclusion: markers publish "I am inside gate G" in a
// per-thread slot with a plain store and check the gate's `exclusive` flag behind a compiler
// barrier only; the exclusive side pays instead, with membarrier(2) (a memory barrier on every
// CPU running this process) before it scans the slots. Where membarrier is unavailable the
// markers fall back to a full fence and stay correct.
//
// Contract:
//  - TryEnterShared() returns false while an exclusive section is pending or running; the
//    caller must then not touch the guarded data through this path (take a slow path instead).
//  - Every successful TryEnterShared() is paired with ExitShared() on the same thread, and a
//    thread holds at most one gate at a time.
//  - LockExclusive()/UnlockExclusive() are serialized by the caller (one exclusive holder), and
//    a thread inside a gate never calls LockExclusive().
//  - Stores made inside a shared section happen-before the code after LockExclusive() returns;
//    stores made inside the exclusive section happen-before a later successful TryEnterShared().
#ifndef CBT_CORE_WRITE_GATE_H_
#define CBT_CORE_WRITE_GATE_H_

#include <atomic>

namespace cbt {

class WriteGate {
 public:
  WriteGate();
  WriteGate(const WriteGate&) = delete;
  WriteGate& operator=(const WriteGate&) = delete;

  // Inline (defined below): they are the whole cost of a marker on the I/O path.
  bool TryEnterShared();
  void ExitShared();

  void LockExclusive();
  void UnlockExclusive();

  // One per thread that ever entered a gate; never freed, reused after the thread exits.
  struct alignas(64) ThreadSlot {
    std::atomic<const WriteGate*> inside{nullptr};
    std::atomic<bool> claimed{false};
    ThreadSlot* next = nullptr;
  };

 private:
  std::atomic<bool> exclusive_{false};
};

namespace write_gate_internal {
// The calling thread's slot, nullptr until its first TryEnterShared(). Constant-initialized and
// defined here so that the hot path reads it with one thread-pointer-relative load.
inline thread_local WriteGate::ThreadSlot* t_slot = nullptr;
// True when membarrier(PRIVATE_EXPEDITED) is unavailable: markers must then fence themselves.
extern std::atomic<bool> g_markers_fence;
// Claims a slot for the calling thread (first use only) and sets t_slot.
WriteGate::ThreadSlot* AttachThisThread();
}  // namespace write_gate_internal

inline bool WriteGate::TryEnterShared() {
  ThreadSlot* slot = write_gate_internal::t_slot;
  if (slot == nullptr) [[unlikely]] slot = write_gate_internal::AttachThisThread();
  slot->inside.store(this, std::memory_order_relaxed);
  if (write_gate_internal::g_markers_fence.load(std::memory_order_relaxed)) [[unlikely]] {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  if (exclusive_.load(std::memory_order_acquire)) [[unlikely]] {
    slot->inside.store(nullptr, std::memory_order_release);
    return false;
  }
  return true;
}

inline void WriteGate::ExitShared() {
  write_gate_internal::t_slot->inside.store(nullptr, std::memory_order_release);
}

}  // namespace cbt

#endif  // CBT_CORE_WRITE_GATE_H_
