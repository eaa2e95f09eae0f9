#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>

#include "blksnap/kernel.h"

namespace cbt::blksnap {
namespace {

class LinuxKernel final : public Kernel {
 public:
  int Open(const std::string& path, int flags, int* fd) override {
    const int result = ::open(path.c_str(), flags | O_CLOEXEC);
    if (result < 0) return errno;
    *fd = result;
    return 0;
  }

  int Close(int fd) override { return ::close(fd) == 0 ? 0 : errno; }

  int Ioctl(int fd, unsigned long request, void* arg) override {
    int result;
    do {
      result = ::ioctl(fd, request, arg);
    } while (result < 0 && errno == EINTR && request != kWaitEventRequest);
    return result < 0 ? errno : 0;
  }

  int Stat(const std::string& path, FileStatus* status) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return errno;
    *status = ToFileStatus(st);
    return 0;
  }

  int RealPath(const std::string& path, std::string* resolved) override {
    char buffer[PATH_MAX];
    if (::realpath(path.c_str(), buffer) == nullptr) return errno;
    *resolved = buffer;
    return 0;
  }

  int KernelRelease(std::string* release) override {
    struct utsname names;
    if (::uname(&names) != 0) return errno;
    *release = names.release;
    return 0;
  }

 private:
  // WAIT_EVENT reports EINTR to its caller (it is a "no event" answer), everything else is
  // retried.
  static constexpr unsigned long kWaitEventRequest = 0x90005605;
};

}  // namespace

std::unique_ptr<Kernel> NewLinuxKernel() { return std::make_unique<LinuxKernel>(); }

}  // namespace cbt::blksnap
