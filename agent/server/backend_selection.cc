#include "server/backend_selection.h"

#include "absl/strings/str_cat.h"
#include "blksnap/blksnap_backend.h"
#include "blksnap/flavour.h"
#include "blksnap/kernel.h"
#include "blksnap/remote_kernel.h"
#include "ublk/backend/ublk_backend.h"

namespace cbt::agent {
namespace {

// Stands in when no kernel mechanism is usable, so that the daemon still answers
// GetCapabilities and health checks and tells callers why nothing else works.
class UnavailableBackend final : public Backend {
 public:
  explicit UnavailableBackend(std::string reason) : reason_(std::move(reason)) {}

  BackendDescription Describe() const override {
    BackendDescription d;
    d.reason = reason_;
    return d;
  }
  absl::StatusOr<TrackerState> AttachTracker(const std::string&, bool*) override {
    return Fail();
  }
  absl::Status DetachTracker(const std::string&) override { return Fail(); }
  absl::StatusOr<TrackerState> GetTracker(const std::string&) override { return Fail(); }
  absl::StatusOr<std::vector<TrackerState>> ListTrackers() override { return Fail(); }
  absl::StatusOr<SnapshotState> CreateSnapshot(const std::vector<std::string>&,
                                               const DiffStorageSpec&) override {
    return Fail();
  }
  absl::Status ReleaseSnapshot(const Uuid&) override { return Fail(); }
  absl::StatusOr<SnapshotState> GetSnapshot(const Uuid&) override { return Fail(); }
  absl::StatusOr<std::vector<SnapshotState>> ListSnapshots() override { return Fail(); }
  absl::StatusOr<CbtInfo> GetCbtInfo(const std::string&) override { return Fail(); }
  absl::Status ReadCbtMap(const std::string&, uint64_t, uint64_t, uint8_t*) override {
    return Fail();
  }
  absl::Status MarkDirty(const std::string&, const std::vector<SectorRange>&) override {
    return Fail();
  }
  void Shutdown() override {}

 private:
  absl::Status Fail() const {
    return absl::FailedPreconditionError(absl::StrCat("no CBT backend on this node: ", reason_));
  }
  const std::string reason_;
};

absl::StatusOr<std::unique_ptr<blksnap::Kernel>> MakeKernel(const AgentOptions& options) {
  if (options.blksnap_emulator_socket.empty()) return blksnap::NewLinuxKernel();
  return blksnap::NewRemoteKernel(options.blksnap_emulator_socket);
}

absl::StatusOr<std::unique_ptr<Backend>> StartBlksnap(const AgentOptions& options,
                                                      EventSink* events, StateStore* state) {
  auto kernel = MakeKernel(options);
  if (!kernel.ok()) return kernel.status();
  blksnap::BlksnapBackendOptions blksnap_options;
  blksnap_options.forced_flavour = options.blksnap_flavour;
  return blksnap::NewBlksnapBackend(std::move(*kernel), blksnap_options, events, state);
}

absl::StatusOr<std::unique_ptr<Backend>> StartUblk(std::string why, EventSink* events,
                                                   StateStore* state) {
  ublk::UblkBackendOptions ublk_options;
  ublk_options.selection_reason = std::move(why);
  return ublk::NewUblkBackend(ublk_options, events, state);
}

}  // namespace

absl::StatusOr<BackendChoice> SelectBackend(const AgentOptions& options, EventSink* events,
                                            StateStore* state) {
  BackendChoice choice;
  if (options.backend == "blksnap") {
    auto backend = StartBlksnap(options, events, state);
    if (!backend.ok()) return backend.status();
    choice.backend = std::move(*backend);
    return choice;
  }
  if (options.backend == "ublk") {
    auto backend = StartUblk("--backend=ublk", events, state);
    if (!backend.ok()) return backend.status();
    choice.backend = std::move(*backend);
    return choice;
  }
  if (options.backend != "auto") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--backend='", options.backend, "' is not one of auto, blksnap, ublk"));
  }
  auto backend = StartBlksnap(options, events, state);
  if (backend.ok()) {
    choice.backend = std::move(*backend);
    return choice;
  }
  if (backend.status().code() != absl::StatusCode::kNotFound &&
      backend.status().code() != absl::StatusCode::kUnavailable) {
    return backend.status();
  }
  const std::string blksnap_reason(backend.status().message());
  // A state file of one backend is not reused by the other (StateStore's backend field).
  auto ublk = StartUblk(absl::StrCat("auto: blksnap unavailable (", blksnap_reason, ")"),
                        events, state);
  if (ublk.ok()) {
    choice.backend = std::move(*ublk);
    return choice;
  }
  if (ublk.status().code() != absl::StatusCode::kNotFound &&
      ublk.status().code() != absl::StatusCode::kUnavailable) {
    return ublk.status();
  }
  choice.unavailable_reason =
      absl::StrCat("blksnap: ", blksnap_reason, "; ublk: ", ublk.status().message());
  choice.backend = std::make_unique<UnavailableBackend>(choice.unavailable_reason);
  return choice;
}

}  // namespace cbt::agent
