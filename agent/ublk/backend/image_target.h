// ImageTarget: the ublk target behind a snapshot image device (/dev/ublkbM): every request is
// served from the snapshot's CowStore — reads show the origin as it was at the take, writes go
// to the diff storage only (and mark both CBT maps, see CowStore::AttachCbtMap).
//
// Requests run synchronously on the image device's queue thread: images are read sequentially
// by backup software, and the store's reads are plain preads of the origin or diff storage.
// Once the snapshot is corrupted every request fails with -EIO, as blksnap's image does.
// DISCARD and WRITE_ZEROES are not advertised for images and answer -EOPNOTSUPP.
#ifndef CBT_AGENT_UBLK_BACKEND_IMAGE_TARGET_H_
#define CBT_AGENT_UBLK_BACKEND_IMAGE_TARGET_H_

#include <atomic>
#include <cstdint>

#include "ublk/cow/cow_store.h"
#include "ublk/target.h"

namespace cbt::ublk {

class ImageTarget final : public Target {
 public:
  // `store` must outlive the target.
  explicit ImageTarget(CowStore* store) : store_(store) {}

  void Submit(IoContext& ctx, const IoRequest& request) override;
  // Never called: the target queues no backing I/O on the ring.
  void OnTargetCompletion(IoContext&, int, uint32_t, int) override {}

  uint64_t failed_requests() const { return failed_.load(std::memory_order_relaxed); }

 private:
  CowStore* const store_;
  std::atomic<uint64_t> failed_{0};
};

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_BACKEND_IMAGE_TARGET_H_
