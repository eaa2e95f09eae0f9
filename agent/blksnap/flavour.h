// Which blksnap user-space interface ("flavour", see uapi.h) the loaded module speaks.
//
// The flavour is decided from the device nodes present and the kernel release, never by trying
// ioctls: v7's BLKFILTER_CTL code is lk6.15's BLKFILTER_ATTACH code, so a wrong guess would
// attach where it meant to query.
#ifndef CBT_AGENT_BLKSNAP_FLAVOUR_H_
#define CBT_AGENT_BLKSNAP_FLAVOUR_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "blksnap/kernel.h"
#include "blksnap/uapi.h"

namespace cbt::blksnap {

struct FlavourChoice {
  Flavour flavour = Flavour::kLk615;
  std::string control_device;  // e.g. "/dev/blksnap-control"
  std::string module_version;  // "major.minor.revision.build" from IOCTL_BLKSNAP_VERSION
  std::string reason;          // why this flavour, for people
};

// Decides without probing by trial:
//   val7    when /dev/veeamblksnap and /dev/bdevfilter exist;
//   lk6.15  when /dev/blksnap-control exists and the kernel release is >= 6.15;
//   v7      when /dev/blksnap-control exists and the kernel release is older.
// `forced` is "auto" (or empty), "lk6.15", "v7" or "val7"; a forced flavour still needs its
// control device. Unavailable when no blksnap control device exists (module not loaded),
// InvalidArgument for an unknown `forced`. The module version is read with
// IOCTL_BLKSNAP_VERSION, whose code is the same in every flavour.
absl::StatusOr<FlavourChoice> DetectFlavour(Kernel& kernel, const std::string& forced);

std::string FlavourName(Flavour flavour);  // "lk6.15" / "v7" / "val7"
absl::StatusOr<Flavour> ParseFlavour(const std::string& name);

// The control device of a flavour.
std::string ControlDevicePath(Flavour flavour);

// The image disk name (without "/dev/") the flavour's module gives the image of device
// major:minor: "blksnap-8-1", "blksnap-image_8:1", "veeamblksnapimg_8:1".
std::string ImageDiskName(Flavour flavour, uint32_t major, uint32_t minor);

// "6.15.0-emu" -> {6, 15}; false when the release does not start with "<major>.<minor>".
bool ParseKernelRelease(const std::string& release, int* major, int* minor);

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_FLAVOUR_H_
