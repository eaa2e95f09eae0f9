// Kernel: the one seam between the blksnap backend and the operating system.
//
// Every system call the blksnap backend makes goes through this interface, so tests can put the
// uapi emulator (tests/blksnap_emulator) behind it. Methods mirror the system calls and return
// 0 or a positive errno, like the kernel does; no method throws or aborts. Implementations are
// thread-safe.
#ifndef CBT_AGENT_BLKSNAP_KERNEL_H_
#define CBT_AGENT_BLKSNAP_KERNEL_H_

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace cbt::blksnap {

struct FileStatus {
  bool is_block_device = false;
  bool is_directory = false;
  bool is_regular_file = false;
  uint32_t rdev_major = 0;  // for device nodes
  uint32_t rdev_minor = 0;
  uint32_t dev_major = 0;   // the device holding the file
  uint32_t dev_minor = 0;
  uint64_t size = 0;        // regular files
};

// What stat(2) said, as FileStatus.
inline FileStatus ToFileStatus(const struct stat& st) {
  FileStatus status;
  status.is_block_device = S_ISBLK(st.st_mode);
  status.is_directory = S_ISDIR(st.st_mode);
  status.is_regular_file = S_ISREG(st.st_mode);
  status.rdev_major = major(st.st_rdev);
  status.rdev_minor = minor(st.st_rdev);
  status.dev_major = major(st.st_dev);
  status.dev_minor = minor(st.st_dev);
  status.size = static_cast<uint64_t>(st.st_size);
  return status;
}

class Kernel {
 public:
  virtual ~Kernel() = default;

  // open(2): on success *fd is set and 0 returned.
  virtual int Open(const std::string& path, int flags, int* fd) = 0;
  virtual int Close(int fd) = 0;
  // ioctl(2) with `arg` pointing to the request's struct (or output), as the kernel sees it.
  virtual int Ioctl(int fd, unsigned long request, void* arg) = 0;
  // stat(2), following symlinks.
  virtual int Stat(const std::string& path, FileStatus* status) = 0;
  // realpath(3).
  virtual int RealPath(const std::string& path, std::string* resolved) = 0;
  // The release string of uname(2), e.g. "6.1.0-50-amd64".
  virtual int KernelRelease(std::string* release) = 0;
};

// The host's kernel.
std::unique_ptr<Kernel> NewLinuxKernel();

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_KERNEL_H_
