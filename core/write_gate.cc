#include "core/write_gate.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#include <thread>

namespace cbt {
namespace {

using ThreadSlot = WriteGate::ThreadSlot;

// Slots form a push-only list: nodes are never freed, so the exclusive side can walk it
// without a lock while threads come and go.
std::atomic<ThreadSlot*> g_slots{nullptr};

using write_gate_internal::g_markers_fence;
using write_gate_internal::t_slot;

void RegisterMembarrier() {
  static std::once_flag once;
  std::call_once(once, [] {
    const long supported = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    const bool ok = supported >= 0 && (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
                    syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    g_markers_fence.store(!ok, std::memory_order_seq_cst);
  });
}

void HeavyBarrier() {
  if (g_markers_fence.load(std::memory_order_relaxed) ||
      syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
    // Markers fence themselves in this mode (or the syscall failed: fall back for good).
    g_markers_fence.store(true, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

ThreadSlot* ClaimSlot() {
  for (ThreadSlot* s = g_slots.load(std::memory_order_acquire); s != nullptr; s = s->next) {
    bool expected = false;
    if (!s->claimed.load(std::memory_order_relaxed) &&
        s->claimed.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      return s;
    }
  }
  auto* slot = new ThreadSlot;  // lives for the whole process by design
  slot->claimed.store(true, std::memory_order_relaxed);
  ThreadSlot* head = g_slots.load(std::memory_order_relaxed);
  do {
    slot->next = head;
  } while (!g_slots.compare_exchange_weak(head, slot, std::memory_order_release,
                                          std::memory_order_relaxed));
  return slot;
}

// The slot pointer (write_gate_internal::t_slot) is a trivially destructible thread_local so
// that the hot path reads it with one %fs-relative load; a separate object hands the slot back
// when the thread exits.
struct SlotReleaser {
  ~SlotReleaser() {
    if (t_slot != nullptr) {
      t_slot->inside.store(nullptr, std::memory_order_release);
      t_slot->claimed.store(false, std::memory_order_release);
      t_slot = nullptr;
    }
  }
};

}  // namespace

namespace write_gate_internal {

std::atomic<bool> g_markers_fence{false};

ThreadSlot* AttachThisThread() {
  if (t_slot == nullptr) {
    static thread_local SlotReleaser releaser;
    (void)releaser;
    t_slot = ClaimSlot();
  }
  return t_slot;
}

}  // namespace write_gate_internal

WriteGate::WriteGate() { RegisterMembarrier(); }

void WriteGate::LockExclusive() {
  exclusive_.store(true, std::memory_order_relaxed);
  HeavyBarrier();
  for (ThreadSlot* s = g_slots.load(std::memory_order_acquire); s != nullptr; s = s->next) {
    for (int spins = 0; s->inside.load(std::memory_order_acquire) == this; ++spins) {
      if (spins > 64) std::this_thread::yield();
    }
  }
}

void WriteGate::UnlockExclusive() { exclusive_.store(false, std::memory_order_release); }

}  // namespace cbt
