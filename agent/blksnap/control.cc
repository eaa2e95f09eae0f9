#include "blksnap/control.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "backend/errno_status.h"

namespace cbt::blksnap {

blksnap_uuid ToBlksnapUuid(const Uuid& id) {
  blksnap_uuid out{};
  std::memcpy(out.b, id.bytes.data(), sizeof(out.b));
  return out;
}

Uuid FromBlksnapUuid(const blksnap_uuid& id) {
  Uuid out;
  std::memcpy(out.bytes.data(), id.b, sizeof(id.b));
  return out;
}

absl::StatusOr<std::unique_ptr<Control>> Control::Open(Kernel& kernel, const std::string& path) {
  int fd = -1;
  if (int err = kernel.Open(path, O_RDWR, &fd); err != 0) {
    return agent::ErrnoStatus(err, absl::StrCat("cannot open blksnap control device ", path),
                              err == EACCES || err == EPERM
                                  ? absl::StatusCode::kPermissionDenied
                                  : absl::StatusCode::kUnavailable);
  }
  return std::unique_ptr<Control>(new Control(kernel, path, fd));
}

Control::~Control() { kernel_.Close(fd_); }

int Control::Version(blksnap_version* version) {
  *version = blksnap_version{};
  return kernel_.Ioctl(fd_, kIoctlVersion, version);
}

int Control::Create(uint64_t limit_sectors, const std::string& diff_storage, Uuid* id) {
  blksnap_snapshot_create arg{};
  arg.diff_storage_limit_sect = limit_sectors;
  arg.diff_storage_filename = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(diff_storage.c_str()));
  const int err = kernel_.Ioctl(fd_, kIoctlSnapshotCreate, &arg);
  if (err == 0) *id = FromBlksnapUuid(arg.id);
  return err;
}

int Control::Destroy(const Uuid& id) {
  blksnap_uuid arg = ToBlksnapUuid(id);
  return kernel_.Ioctl(fd_, kIoctlSnapshotDestroy, &arg);
}

int Control::Take(const Uuid& id) {
  blksnap_uuid arg = ToBlksnapUuid(id);
  return kernel_.Ioctl(fd_, kIoctlSnapshotTake, &arg);
}

int Control::Collect(std::vector<Uuid>* ids) {
  ids->clear();
  constexpr int kAttempts = 16;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    blksnap_snapshot_collect query{};
    if (int err = kernel_.Ioctl(fd_, kIoctlSnapshotCollect, &query); err != 0) return err;
    if (query.count == 0) return 0;
    // A little slack so that a snapshot created between the two calls does not force a retry.
    std::vector<blksnap_uuid> buffer(static_cast<size_t>(query.count) + 4);
    blksnap_snapshot_collect list{};
    list.count = static_cast<uint32_t>(buffer.size());
    list.ids = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(buffer.data()));
    const int err = kernel_.Ioctl(fd_, kIoctlSnapshotCollect, &list);
    // ENODATA: the array was too small after all (the count grew); `count` then holds the
    // number of entries filled, not the number needed, so ask again.
    if (err == ENODATA) continue;
    if (err != 0) return err;
    const size_t filled = std::min<size_t>(list.count, buffer.size());
    ids->reserve(filled);
    for (size_t i = 0; i < filled; ++i) ids->push_back(FromBlksnapUuid(buffer[i]));
    return 0;
  }
  return ENODATA;
}

int Control::WaitEvent(const Uuid& id, uint32_t timeout_jiffies, blksnap_snapshot_event* event) {
  std::memset(event, 0, sizeof(*event));
  event->id = ToBlksnapUuid(id);
  event->timeout_ms = timeout_jiffies;
  return kernel_.Ioctl(fd_, kIoctlSnapshotWaitEvent, event);
}

}  // namespace cbt::blksnap
