#include "ublk/backend/image_target.h"

#include <cerrno>

#include "ublk/uapi.h"

namespace cbt::ublk {

void ImageTarget::Submit(IoContext& ctx, const IoRequest& request) {
  const uint64_t offset = request.start_sector << 9;
  const uint64_t length = uint64_t{request.nr_sectors} << 9;
  absl::Status status;
  switch (request.op) {
    case kIoOpRead:
      status = store_->ReadImage(offset, length, request.buffer);
      break;
    case kIoOpWrite:
      status = store_->WriteImage(offset, length, request.buffer);
      break;
    case kIoOpFlush:
      status = store_->FlushImage();
      break;
    default:
      failed_.fetch_add(1, std::memory_order_relaxed);
      ctx.Complete(request.tag, -EOPNOTSUPP);
      return;
  }
  if (!status.ok()) {
    failed_.fetch_add(1, std::memory_order_relaxed);
    ctx.Complete(request.tag, -EIO);
    return;
  }
  const bool data = request.op == kIoOpRead || request.op == kIoOpWrite;
  ctx.Complete(request.tag, data ? static_cast<int>(length) : 0);
}

}  // namespace cbt::ublk
