#include "test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

namespace cbt::ublk::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                        "/cbt-ublk-cow-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::Subdir(const std::string& name) const {
  const std::string p = File(name);
  if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) {
    std::perror("mkdir");
    std::abort();
  }
  return p;
}

std::vector<uint8_t> RandomBytes(uint64_t length, uint64_t seed) {
  std::vector<uint8_t> out(length);
  std::mt19937_64 rng(seed);
  uint64_t i = 0;
  for (; i + 8 <= length; i += 8) {
    const uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  const uint64_t v = rng();
  std::memcpy(out.data() + i, &v, length - i);
  return out;
}

uint64_t Checksum(const uint8_t* data, uint64_t length) {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < length; ++i) {
    h ^= data[i];
    h *= 1099511628211ull;
  }
  return h;
}

void WriteFile(const std::string& path, const std::vector<uint8_t>& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::pwrite(fd, data.data(), data.size(), 0) != static_cast<ssize_t>(data.size()) ||
      ::fsync(fd) != 0) {
    std::perror(("write " + path).c_str());
    std::abort();
  }
  ::close(fd);
}

std::vector<uint8_t> ReadFile(const std::string& path, uint64_t length) {
  std::vector<uint8_t> out(length);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::pread(fd, out.data(), length, 0) != static_cast<ssize_t>(length)) {
    std::perror(("read " + path).c_str());
    std::abort();
  }
  ::close(fd);
  return out;
}

int CountEntries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
  }
  ::closedir(d);
  return n;
}

int OpenDirect(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (fd < 0 && errno == EINVAL) fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  return fd;
}

namespace {

// Runs a command, returns its exit status and first line of stdout.
int Run(const std::string& command, std::string* out) {
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return -1;
  char line[512] = {};
  if (std::fgets(line, sizeof line, p) != nullptr) {
    *out = line;
    while (!out->empty() && (out->back() == '\n' || out->back() == '\r')) out->pop_back();
  }
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

LoopDevice::LoopDevice(const std::string& backing_file) {
  if (::geteuid() != 0) {
    reason_ = "loop devices need root";
    return;
  }
  std::string out;
  const int rc = Run("losetup --find --show '" + backing_file + "' 2>/dev/null", &out);
  if (rc != 0 || out.rfind("/dev/loop", 0) != 0) {
    reason_ = "losetup --find --show failed here (exit " + std::to_string(rc) +
              "): no loop device support in this environment";
    return;
  }
  device_ = out;
}

LoopDevice::~LoopDevice() {
  if (device_.empty()) return;
  std::string out;
  Run("losetup -d '" + device_ + "' 2>/dev/null", &out);
}

}  // namespace cbt::ublk::testing
