// Aligned-buffer and whole-range pread/pwrite helpers for the copy-on-write store.
//
// The origin is opened O_DIRECT by the agent and the diff storage is opened O_DIRECT where the
// filesystem allows it, so every transfer the store issues uses a buffer, an offset and (except
// at the very end of the origin) a length aligned to kIoAlign.
#ifndef CBT_AGENT_UBLK_COW_ALIGNED_IO_H_
#define CBT_AGENT_UBLK_COW_ALIGNED_IO_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace cbt::ublk {

// Alignment of every buffer, offset and length the store hands to the kernel. 4096 covers any
// logical block size Linux supports on x86 (it is capped at the page size).
inline constexpr uint64_t kIoAlign = 4096;
inline constexpr uint64_t kSectorSize = 512;

inline constexpr uint64_t AlignDown(uint64_t v, uint64_t a) { return v & ~(a - 1); }
inline constexpr uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
inline constexpr bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// A kIoAlign-aligned heap buffer (posix_memalign) that only grows.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // Returns a buffer of at least `size` bytes, or nullptr when memory is exhausted. The
  // contents are unspecified after a growth.
  uint8_t* Get(size_t size);

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

// pread()/pwrite() of exactly `length` bytes, retrying on EINTR and short transfers. Return 0
// or a positive errno; an end of file before `length` bytes is EIO.
int PreadFull(int fd, uint8_t* buf, uint64_t length, uint64_t offset);
int PwriteFull(int fd, const uint8_t* buf, uint64_t length, uint64_t offset);

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_COW_ALIGNED_IO_H_
