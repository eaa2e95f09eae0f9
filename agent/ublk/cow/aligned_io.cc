#include "ublk/cow/aligned_io.h"

#include <unistd.h>

#include <cerrno>

namespace cbt::ublk {

uint8_t* AlignedBuffer::Get(size_t size) {
  if (size <= size_ && data_ != nullptr) return data_.get();
  void* p = nullptr;
  const size_t rounded = AlignUp(size == 0 ? 1 : size, kIoAlign);
  if (::posix_memalign(&p, kIoAlign, rounded) != 0) return nullptr;
  data_.reset(static_cast<uint8_t*>(p));
  size_ = rounded;
  return data_.get();
}

int PreadFull(int fd, uint8_t* buf, uint64_t length, uint64_t offset) {
  uint64_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, buf + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;  // end of file/device inside the range
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

int PwriteFull(int fd, const uint8_t* buf, uint64_t length, uint64_t offset) {
  uint64_t done = 0;
  while (done < length) {
    const ssize_t n =
        ::pwrite(fd, buf + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

}  // namespace cbt::ublk
