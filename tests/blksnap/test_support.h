// Helpers shared by the blksnap backend tests: a forwarding Kernel with fault injection around
// the emulator, an event recorder, temporary directories, and an independent "raw" blksnap
// client for doing things behind the backend's back.
#ifndef CBT_TESTS_BLKSNAP_TEST_SUPPORT_H_
#define CBT_TESTS_BLKSNAP_TEST_SUPPORT_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backend/backend.h"
#include "blksnap/kernel.h"
#include "blksnap/uapi.h"
#include "core/generation_id.h"

namespace cbt::blksnap::testing {

inline const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

#define CBT_ASSERT_OK(expr)                                                          \
  do {                                                                               \
    const auto& cbt_assert_ok_value = (expr);                                        \
    ASSERT_TRUE(::cbt::blksnap::testing::StatusOf(cbt_assert_ok_value).ok())         \
        << #expr << ": " << ::cbt::blksnap::testing::StatusOf(cbt_assert_ok_value);  \
  } while (0)

#define CBT_EXPECT_CODE(expr, expected_code)                                         \
  do {                                                                               \
    const auto& cbt_expect_code_value = (expr);                                      \
    EXPECT_EQ(::cbt::blksnap::testing::StatusOf(cbt_expect_code_value).code(),       \
              expected_code)                                                         \
        << #expr << ": " << ::cbt::blksnap::testing::StatusOf(cbt_expect_code_value); \
  } while (0)

// What the forwarding kernel changes or counts. Thread-safe.
struct Faults {
  std::mutex mu;
  std::set<std::string> hidden_paths;             // Stat/Open/RealPath answer ENOENT
  std::map<unsigned long, int> ioctl_errors;      // request code -> errno, every call
  // Called after a successful pass-through ioctl (e.g. to alter an answer), outside `mu`. Set it
  // with SetAfterIoctl once other threads (event watchers) may call the kernel.
  std::function<void(unsigned long request, void* arg)> after_ioctl;
  std::atomic<int> open_descriptors{0};           // opens minus closes through this kernel
  std::atomic<int> ioctl_calls{0};

  void Hide(const std::string& path) {
    std::lock_guard<std::mutex> lock(mu);
    hidden_paths.insert(path);
  }
  void FailIoctl(unsigned long request, int err) {
    std::lock_guard<std::mutex> lock(mu);
    ioctl_errors[request] = err;
  }
  void SetAfterIoctl(std::function<void(unsigned long request, void* arg)> hook) {
    std::lock_guard<std::mutex> lock(mu);
    after_ioctl = std::move(hook);
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu);
    hidden_paths.clear();
    ioctl_errors.clear();
    after_ioctl = nullptr;
  }
};

// Forwards every call to a shared kernel (the emulator), applying `faults`.
class ForwardingKernel final : public Kernel {
 public:
  ForwardingKernel(std::shared_ptr<Kernel> target, std::shared_ptr<Faults> faults)
      : target_(std::move(target)), faults_(std::move(faults)) {}

  int Open(const std::string& path, int flags, int* fd) override {
    if (Hidden(path)) return ENOENT;
    const int err = target_->Open(path, flags, fd);
    if (err == 0) ++faults_->open_descriptors;
    return err;
  }
  int Close(int fd) override {
    --faults_->open_descriptors;
    return target_->Close(fd);
  }
  int Ioctl(int fd, unsigned long request, void* arg) override {
    ++faults_->ioctl_calls;
    std::function<void(unsigned long, void*)> after;
    {
      std::lock_guard<std::mutex> lock(faults_->mu);
      auto it = faults_->ioctl_errors.find(request);
      if (it != faults_->ioctl_errors.end()) return it->second;
      after = faults_->after_ioctl;
    }
    const int err = target_->Ioctl(fd, request, arg);
    if (err == 0 && after) after(request, arg);
    return err;
  }
  int Stat(const std::string& path, FileStatus* status) override {
    if (Hidden(path)) return ENOENT;
    return target_->Stat(path, status);
  }
  int RealPath(const std::string& path, std::string* resolved) override {
    if (Hidden(path)) return ENOENT;
    return target_->RealPath(path, resolved);
  }
  int KernelRelease(std::string* release) override { return target_->KernelRelease(release); }

 private:
  bool Hidden(const std::string& path) {
    std::lock_guard<std::mutex> lock(faults_->mu);
    return faults_->hidden_paths.count(path) != 0;
  }

  std::shared_ptr<Kernel> target_;
  std::shared_ptr<Faults> faults_;
};

// Records published events.
class RecordingSink final : public agent::EventSink {
 public:
  void Publish(const agent::SnapshotEvent& event) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(event);
    cv_.notify_all();
  }

  std::vector<agent::SnapshotEvent> events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

  // Waits until an event matches `match`; false after `timeout`.
  bool WaitFor(const std::function<bool(const agent::SnapshotEvent&)>& match,
               std::chrono::milliseconds timeout, agent::SnapshotEvent* found = nullptr) {
    std::unique_lock<std::mutex> lock(mu_);
    const bool ok = cv_.wait_for(lock, timeout, [&] {
      for (const agent::SnapshotEvent& event : events_) {
        if (match(event)) {
          if (found != nullptr) *found = event;
          return true;
        }
      }
      return false;
    });
    return ok;
  }

  size_t Count(const std::function<bool(const agent::SnapshotEvent&)>& match) const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const agent::SnapshotEvent& event : events_) n += match(event) ? 1 : 0;
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<agent::SnapshotEvent> events_;
};

// mkdtemp under $TMPDIR (or /tmp); removed by RemoveTree.
std::string MakeTempDir(const std::string& prefix);
void RemoveTree(const std::string& path);
// Number of threads of this process (/proc/self/task).
int ThreadCount();

// A blksnap client written independently of the backend (own struct filling, own ioctl
// choice per flavour), for actions behind the backend's back. Methods return 0 or an errno.
class RawBlksnap {
 public:
  RawBlksnap(Kernel& kernel, Flavour flavour);
  ~RawBlksnap();

  int Create(const std::string& diff_storage, uint64_t limit_bytes, Uuid* id);
  int Add(const std::string& device, const Uuid& id);
  int Take(const Uuid& id);
  int Destroy(const Uuid& id);
  int Attach(const std::string& device);
  int Detach(const std::string& device);
  int SnapshotInfo(const std::string& device, blksnap_snapshotinfo* info);
  int CbtInfo(const std::string& device, blksnap_cbtinfo* info);
  int Collect(std::vector<Uuid>* ids);

 private:
  // Runs one filter request on `device` in the flavour's way.
  int Filter(const std::string& device, int op /*0 attach 1 detach 2 ctl*/, uint32_t cmd,
             void* opt, uint32_t optlen);

  Kernel& kernel_;
  const Flavour flavour_;
  int control_fd_ = -1;
};

}  // namespace cbt::blksnap::testing

#endif  // CBT_TESTS_BLKSNAP_TEST_SUPPORT_H_
