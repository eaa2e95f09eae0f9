// Helpers for the emulator tests: a temp directory and a Driver that speaks the raw blksnap
// uapi of one flavour through any Kernel (building uapi.h structs and calling Ioctl), the way
// the real module would be driven. Every call returns the errno of the ioctl (0 = success).
#ifndef CBT_TESTS_BLKSNAP_EMULATOR_TEST_UTIL_H_
#define CBT_TESTS_BLKSNAP_EMULATOR_TEST_UTIL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "blksnap/kernel.h"
#include "blksnap/uapi.h"

namespace cbt::blksnap::emulator::testing {

inline constexpr uint64_t kMiB = 1024 * 1024;

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Creates (mkdir -p) a subdirectory and returns its path.
  std::string Subdir(const std::string& name) const;

 private:
  std::string path_;
};

std::string ControlPath(Flavour flavour);
std::string ImagePath(Flavour flavour, uint32_t major, uint32_t minor);
std::string FlavourTestName(Flavour flavour);
std::string UuidText(const blksnap_uuid& id);
bool UuidIsNil(const blksnap_uuid& id);
// A deterministic pattern of `length` bytes derived from `seed`.
std::string Pattern(uint64_t length, uint32_t seed);

class Driver {
 public:
  Driver(Kernel* kernel, Flavour flavour) : kernel_(kernel), flavour_(flavour) {}
  ~Driver();
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  Flavour flavour() const { return flavour_; }

  // The fd used for filter ioctls of `device` (the device itself, or /dev/bdevfilter for
  // VAL-7.0) and for the control device; opened once and cached. -1 on failure.
  int DeviceFd(const std::string& device);
  int FilterFd(const std::string& device);
  int ControlFd();

  // Filter framework.
  int Attach(const std::string& device, const char* name = kFilterName);
  int Detach(const std::string& device, const char* name = kFilterName);
  int Ctl(const std::string& device, uint32_t cmd, const void* opt, uint32_t optlen,
          const char* name = kFilterName);
  // The ctl commands with correctly sized arguments.
  int CbtInfo(const std::string& device, blksnap_cbtinfo* info);
  int CbtMap(const std::string& device, uint32_t offset, uint32_t length, uint8_t* buffer);
  int CbtMapAll(const std::string& device, std::vector<uint8_t>* map);  // via CbtInfo's count
  int CbtDirty(const std::string& device, const std::vector<blksnap_sectors>& ranges);
  int SnapshotAdd(const std::string& device, const blksnap_uuid& id);
  int SnapshotInfo(const std::string& device, blksnap_snapshotinfo* info);

  // Control device.
  int Version(blksnap_version* version);
  int Create(const std::string& diff_storage, uint64_t limit_sectors, blksnap_uuid* id);
  int Destroy(const blksnap_uuid& id);
  int Take(const blksnap_uuid& id);
  int Collect(uint32_t capacity, bool with_array, std::vector<blksnap_uuid>* ids,
              uint32_t* count);
  int WaitEvent(const blksnap_uuid& id, uint32_t timeout_jiffies, blksnap_snapshot_event* event);
  int RawControl(unsigned long request, void* arg);

  // BLKGETSIZE64 on a freshly opened `path`.
  int BlockSize64(const std::string& path, uint64_t* size);

 private:
  Kernel* kernel_;
  Flavour flavour_;
  std::map<std::string, int> fds_;
};

}  // namespace cbt::blksnap::emulator::testing

#endif  // CBT_TESTS_BLKSNAP_EMULATOR_TEST_UTIL_H_
