// FilterTransport: how blksnap's block-device filter is reached, the one place where the
// flavours differ for filter operations.
//
//   lk6.15 : BLKFILTER_ATTACH/DETACH/CTL 142..144 on the block device's own fd,
//            attach with struct blkfilter_attach, detach with struct blkfilter_detach;
//   v7     : BLKFILTER_* 140..142 on the block device's fd, struct blkfilter_name;
//   val7   : BDEVFILTER_* on the misc device /dev/bdevfilter, the device named by path.
//
// The ctl commands and their payloads are the same everywhere, so the typed helpers (CbtInfo,
// CbtMap, ...) live in the base class. Every method returns 0 or a positive errno.
#ifndef CBT_AGENT_BLKSNAP_FILTER_H_
#define CBT_AGENT_BLKSNAP_FILTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "blksnap/kernel.h"
#include "blksnap/uapi.h"

namespace cbt::blksnap {

// A block device as the filter transports need it: an open descriptor (lk6.15, v7) and the
// path (val7).
struct DeviceRef {
  int fd = -1;
  std::string path;
};

class FilterTransport {
 public:
  virtual ~FilterTransport() = default;

  virtual Flavour flavour() const = 0;
  virtual int Attach(const DeviceRef& device) = 0;
  virtual int Detach(const DeviceRef& device) = 0;
  virtual int Ctl(const DeviceRef& device, uint32_t cmd, void* opt, uint32_t optlen) = 0;

  int CbtInfo(const DeviceRef& device, blksnap_cbtinfo* info);
  int CbtMap(const DeviceRef& device, uint32_t offset, uint32_t length, uint8_t* out);
  int CbtDirty(const DeviceRef& device, const std::vector<blksnap_sectors>& ranges);
  int SnapshotAdd(const DeviceRef& device, const blksnap_uuid& id);
  int SnapshotInfo(const DeviceRef& device, blksnap_snapshotinfo* info);
};

// `kernel` must outlive the transport. val7 opens /dev/bdevfilter here (and closes it when the
// transport is destroyed).
absl::StatusOr<std::unique_ptr<FilterTransport>> NewFilterTransport(Kernel& kernel,
                                                                    Flavour flavour);

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_FILTER_H_
