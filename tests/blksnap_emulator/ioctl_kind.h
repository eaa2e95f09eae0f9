// IoctlKind: which blksnap operation an ioctl is, independent of the flavour (kept apart from
// emulated_kernel.h so that EmulatorClient users need nothing else).
#ifndef CBT_TESTS_BLKSNAP_EMULATOR_IOCTL_KIND_H_
#define CBT_TESTS_BLKSNAP_EMULATOR_IOCTL_KIND_H_

#include <cstdint>

namespace cbt::blksnap::emulator {

// What an ioctl is, decoded from the descriptor's node, the request number and, for the filter
// control calls, the `cmd` in the caller's struct — independent of the flavour. Used by the
// emulator process's fault injection (blksnap-emulator --kill_after, EmulatorClient::ArmKill).
enum class IoctlKind : uint32_t {
  kOther = 0,          // anything else (also: malformed, unknown request)
  kVersion = 1,        // IOCTL_BLKSNAP_VERSION
  kSnapshotCreate = 2,
  kSnapshotDestroy = 3,
  kSnapshotTake = 4,
  kSnapshotCollect = 5,
  kSnapshotWaitEvent = 6,
  kAttach = 7,         // BLKFILTER_ATTACH (lk6.15, v7) / BDEVFILTER_ATTACH (val7)
  kDetach = 8,
  kCbtInfo = 9,        // filter control command 0 ...
  kCbtMap = 10,
  kCbtDirty = 11,
  kSnapshotAdd = 12,
  kSnapshotInfo = 13,  // ... filter control command 4
  kGetSize = 14,       // BLKGETSIZE64
};
inline constexpr uint32_t kIoctlKindCount = 15;

}  // namespace cbt::blksnap::emulator

#endif  // CBT_TESTS_BLKSNAP_EMULATOR_IOCTL_KIND_H_
