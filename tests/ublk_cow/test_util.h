// Helpers for the COW store tests: a temp directory, files with random contents, loop devices.
#ifndef CBT_TESTS_UBLK_COW_TEST_UTIL_H_
#define CBT_TESTS_UBLK_COW_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace cbt::ublk::testing {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * 1024;

// mkdtemp under $TMPDIR (or /tmp), removed recursively at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  // Creates a subdirectory and returns its path.
  std::string Subdir(const std::string& name) const;

 private:
  std::string path_;
};

// Deterministic pseudo-random bytes.
std::vector<uint8_t> RandomBytes(uint64_t length, uint64_t seed);
// FNV-1a 64 of the bytes (for messages; tests compare the bytes themselves too).
uint64_t Checksum(const uint8_t* data, uint64_t length);
inline uint64_t Checksum(const std::vector<uint8_t>& v) { return Checksum(v.data(), v.size()); }

// Writes `data` to a new file at `path` (truncating). Aborts the test process on failure.
void WriteFile(const std::string& path, const std::vector<uint8_t>& data);
// Reads [0, length) of `path` (buffered).
std::vector<uint8_t> ReadFile(const std::string& path, uint64_t length);
// The number of entries in a directory, "." and ".." excluded.
int CountEntries(const std::string& dir);

// open(O_RDWR|O_DIRECT), falling back to O_RDWR where the filesystem refuses direct I/O.
int OpenDirect(const std::string& path);

// A loop device over a file; empty device() when losetup is not usable here (reason()).
class LoopDevice {
 public:
  LoopDevice(const std::string& backing_file);
  ~LoopDevice();
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  bool ok() const { return !device_.empty(); }
  const std::string& device() const { return device_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string device_;
  std::string reason_;
};

}  // namespace cbt::ublk::testing

#endif  // CBT_TESTS_UBLK_COW_TEST_UTIL_H_
