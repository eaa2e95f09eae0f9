// Control: the blksnap control device (/dev/blksnap-control or /dev/veeamblksnap) and its six
// ioctls, which have the same numbers and structs in every flavour. Methods return 0 or a
// positive errno; the descriptor is opened once and closed when the object is destroyed.
// Thread-safe (each call is one system call on a shared descriptor, except Collect).
#ifndef CBT_AGENT_BLKSNAP_CONTROL_H_
#define CBT_AGENT_BLKSNAP_CONTROL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "blksnap/kernel.h"
#include "blksnap/uapi.h"
#include "core/generation_id.h"

namespace cbt::blksnap {

blksnap_uuid ToBlksnapUuid(const Uuid& id);
Uuid FromBlksnapUuid(const blksnap_uuid& id);

class Control {
 public:
  // `kernel` must outlive the object.
  static absl::StatusOr<std::unique_ptr<Control>> Open(Kernel& kernel, const std::string& path);
  ~Control();
  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;

  const std::string& path() const { return path_; }

  int Version(blksnap_version* version);
  // The limit is in 512-byte sectors; `diff_storage` is a directory, regular file or block
  // device path. On success *id is the new snapshot's id.
  int Create(uint64_t limit_sectors, const std::string& diff_storage, Uuid* id);
  int Destroy(const Uuid& id);
  int Take(const Uuid& id);
  // Every snapshot id the module holds (two-call pattern: count, then list; retried when the
  // count grew between the calls).
  int Collect(std::vector<Uuid>* ids);
  // One wait; `timeout_jiffies` is what the module calls timeout_ms (really jiffies). ENOENT
  // (timeout) and EINTR mean "no event", ESRCH "snapshot gone".
  int WaitEvent(const Uuid& id, uint32_t timeout_jiffies, blksnap_snapshot_event* event);

 private:
  Control(Kernel& kernel, std::string path, int fd)
      : kernel_(kernel), path_(std::move(path)), fd_(fd) {}

  Kernel& kernel_;
  const std::string path_;
  const int fd_;
};

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_CONTROL_H_
