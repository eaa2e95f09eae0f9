// EventWatcher: one thread per snapshot looping on IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT and
// publishing what it hears to the EventSink.
//
//   ENOENT / EINTR  no event, wait again;
//   ESRCH           the snapshot is gone: publish Released (once) and stop;
//   an event        decoded per flavour (code 0 corrupted; code 1 lk6.15 no_space /
//                   val7 low_free_space); unknown codes are logged and skipped.
//
// The watcher reads only data given at construction, so it never takes the backend's locks.
#ifndef CBT_AGENT_BLKSNAP_EVENT_WATCHER_H_
#define CBT_AGENT_BLKSNAP_EVENT_WATCHER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "blksnap/control.h"
#include "blksnap/uapi.h"

namespace cbt::blksnap {

struct WatchedDevice {
  agent::DeviceNumber number;
  std::string path;  // reported in kCorrupted events
};

// Decodes one WAIT_EVENT answer; nullopt (with *skipped saying why) for codes the flavour does
// not define. kCorrupted events get the device path of `devices` with the same number.
std::optional<agent::SnapshotEvent> DecodeEvent(Flavour flavour, const Uuid& id,
                                                const blksnap_snapshot_event& event,
                                                const std::vector<WatchedDevice>& devices,
                                                std::string* skipped);

class EventWatcher {
 public:
  // `control` and `sink` (may be null) must outlive the watcher.
  EventWatcher(Control* control, Flavour flavour, const Uuid& id,
               std::vector<WatchedDevice> devices, uint32_t wait_jiffies, agent::EventSink* sink);
  ~EventWatcher();  // Stop()
  EventWatcher(const EventWatcher&) = delete;
  EventWatcher& operator=(const EventWatcher&) = delete;

  void Start();
  // Asks the thread to stop and joins it (waits at most one WAIT_EVENT). Idempotent.
  void Stop();
  // Asks the thread to stop without waiting for it; finished() tells when it has.
  void RequestStop();
  bool finished() const { return finished_.load(); }

  // While set, an ESRCH ends the thread without publishing Released (the caller is destroying
  // the snapshot and publishes it itself).
  void set_expect_gone(bool expect) { expect_gone_.store(expect); }

  // Publishes kReleased unless it was published already; true if this call published it.
  bool PublishReleasedOnce();

  // The thread saw the snapshot disappear.
  bool gone() const { return gone_.load(); }

 private:
  void Run();
  void Publish(const agent::SnapshotEvent& event);

  Control* const control_;
  const Flavour flavour_;
  const Uuid id_;
  const std::vector<WatchedDevice> devices_;
  const uint32_t wait_jiffies_;
  agent::EventSink* const sink_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> expect_gone_{false};
  std::atomic<bool> gone_{false};
  std::atomic<bool> released_published_{false};
  std::atomic<bool> finished_{false};
  std::mutex mu_;  // for the back-off sleep only
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_EVENT_WATCHER_H_
