#include "blksnap/event_watcher.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "backend/errno_status.h"
#include "backend/log.h"

namespace cbt::blksnap {

std::optional<agent::SnapshotEvent> DecodeEvent(Flavour flavour, const Uuid& id,
                                                const blksnap_snapshot_event& event,
                                                const std::vector<WatchedDevice>& devices,
                                                std::string* skipped) {
  agent::SnapshotEvent out;
  out.snapshot_id = id;
  // The API reports when the agent received the event (time_label is the kernel's monotonic
  // clock, not comparable with wall time).
  out.time_unix_nanos = absl::ToUnixNanos(absl::Now());
  switch (event.code) {
    case kEventCorrupted: {
      blksnap_event_corrupted body;
      std::memcpy(&body, event.data, sizeof(body));
      out.kind = agent::SnapshotEvent::Kind::kCorrupted;
      out.number = agent::DeviceNumber{body.dev_id_mj, body.dev_id_mn};
      out.errno_value = body.err_code < 0 ? -body.err_code : body.err_code;
      for (const WatchedDevice& device : devices) {
        if (device.number == out.number) {
          out.device = device.path;
          break;
        }
      }
      return out;
    }
    case kEventNoSpace:  // == kEventLowFreeSpace
      if (flavour == Flavour::kV7) {
        *skipped = "event code 1 is not defined by the v7 interface";
        return std::nullopt;
      }
      {
        blksnap_event_no_space body;
        std::memcpy(&body, event.data, sizeof(body));
        out.kind = agent::SnapshotEvent::Kind::kNoSpace;
        out.requested_bytes = body.requested_nr_sect * 512;
      }
      return out;
    default:
      *skipped = absl::StrCat("unknown event code ", event.code);
      return std::nullopt;
  }
}

EventWatcher::EventWatcher(Control* control, Flavour flavour, const Uuid& id,
                           std::vector<WatchedDevice> devices, uint32_t wait_jiffies,
                           agent::EventSink* sink)
    : control_(control),
      flavour_(flavour),
      id_(id),
      devices_(std::move(devices)),
      wait_jiffies_(wait_jiffies),
      sink_(sink) {}

EventWatcher::~EventWatcher() { Stop(); }

void EventWatcher::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Run(); });
}

void EventWatcher::RequestStop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
}

void EventWatcher::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

bool EventWatcher::PublishReleasedOnce() {
  if (released_published_.exchange(true)) return false;
  agent::SnapshotEvent event;
  event.snapshot_id = id_;
  event.kind = agent::SnapshotEvent::Kind::kReleased;
  event.time_unix_nanos = absl::ToUnixNanos(absl::Now());
  Publish(event);
  return true;
}

void EventWatcher::Publish(const agent::SnapshotEvent& event) {
  if (sink_ != nullptr) sink_->Publish(event);
}

void EventWatcher::Run() {
  // 4 KiB: keep it off the thread's stack.
  auto event = std::make_unique<blksnap_snapshot_event>();
  struct MarkFinished {
    std::atomic<bool>& flag;
    ~MarkFinished() { flag.store(true); }
  } mark_finished{finished_};
  int consecutive_errors = 0;
  const std::string id_text = id_.ToString();
  while (!stop_.load()) {
    const int err = control_->WaitEvent(id_, wait_jiffies_, event.get());
    if (err == 0) {
      consecutive_errors = 0;
      std::string skipped;
      std::optional<agent::SnapshotEvent> decoded =
          DecodeEvent(flavour_, id_, *event, devices_, &skipped);
      if (!decoded.has_value()) {
        agent::LogWarning("blksnap", "snapshot %s: %s; skipped", id_text.c_str(), skipped.c_str());
        continue;
      }
      if (decoded->kind == agent::SnapshotEvent::Kind::kCorrupted) {
        agent::LogWarning("blksnap", "snapshot %s: image of device %u:%u (%s) corrupted: %s (errno %d)",
                   id_text.c_str(), decoded->number.major, decoded->number.minor,
                   decoded->device.c_str(), agent::ErrnoText(decoded->errno_value).c_str(),
                   decoded->errno_value);
      } else {
        agent::LogWarning("blksnap", "snapshot %s: diff storage %s, %llu bytes requested", id_text.c_str(),
                   flavour_ == Flavour::kVal7 ? "running low" : "hit its limit",
                   static_cast<unsigned long long>(decoded->requested_bytes));
      }
      Publish(*decoded);
      continue;
    }
    if (err == ENOENT || err == EINTR) {
      consecutive_errors = 0;
      continue;
    }
    if (err == ESRCH) {
      gone_.store(true);
      if (!expect_gone_.load() && !stop_.load()) {
        agent::LogInfo("blksnap", "snapshot %s no longer exists; stopping its event watcher", id_text.c_str());
        PublishReleasedOnce();
      }
      return;
    }
    // Anything else (ENOSPC for an oversized event body, an interface problem): log now and
    // then, back off so as not to spin, keep watching.
    if (consecutive_errors++ % 100 == 0) {
      agent::LogWarning("blksnap", "snapshot %s: WAIT_EVENT failed: %s (errno %d)", id_text.c_str(),
                 agent::ErrnoText(err).c_str(), err);
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stop_.load(); });
  }
}

}  // namespace cbt::blksnap
