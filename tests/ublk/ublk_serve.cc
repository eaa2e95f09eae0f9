// ublk-serve: serves one ublk device over a backing file or block device, for the guest tests.
//
//   ublk-serve --backing PATH [--queues N] [--depth N] [--max-io BYTES] [--buffered]
//              [--no-recovery] [--recover DEV_ID] [--cbt-out FILE] [--hold-ms N]
//   ublk-serve --state DEV_ID       print "STATE <name> pid=<pid> flags=<hex>" and exit
//
// Prints "READY /dev/ublkbN id=N features=0x... flags=0x..." on stdout once the block device
// exists. SIGUSR1 takes a "snapshot": quiesce every queue, switch the CBT map, resume; prints
// "SNAPSHOT n quiesce_us=U". SIGUSR2 quiesces, prints "QUIESCED", holds new requests for
// --hold-ms (default 1500), resumes and prints "RESUMED". SIGTERM/SIGINT: with --cbt-out, a
// final snapshot and the read map (one byte per 64 KiB block: its change number, nonzero =
// written) written to FILE; then STOP_DEV + DEL_DEV, and "STATS ..." (the target's request
// counters) on stdout.
// SIGKILL leaves the device QUIESCED (USER_RECOVERY) for a later --recover DEV_ID.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "core/cbt_map.h"
#include "ublk/control.h"
#include "ublk/device.h"
#include "ublk/file_target.h"

namespace {

using cbt::ublk::FileTarget;
using cbt::ublk::UblkDevice;

struct Args {
  std::string backing;
  std::string cbt_out;
  uint32_t queues = 1;
  uint32_t depth = 64;
  uint32_t max_io = 512 << 10;
  uint32_t hold_ms = 1500;
  bool buffered = false;
  bool recovery = true;
  int64_t recover_id = -1;
  int64_t state_id = -1;
};

[[noreturn]] void Usage(const char* why) {
  fprintf(stderr,
          "ublk-serve: %s\n"
          "usage: ublk-serve --backing PATH [--queues N] [--depth N] [--max-io BYTES] "
          "[--buffered] [--no-recovery] [--recover DEV_ID] [--cbt-out FILE] [--hold-ms N]\n"
          "       ublk-serve --state DEV_ID\n",
          why);
  exit(2);
}

template <typename T>
T Number(const char* flag, const char* text) {
  uint64_t value;
  if (!absl::SimpleAtoi(text, &value) || value > static_cast<uint64_t>(INT64_MAX)) {
    Usage((std::string("bad number for ") + flag).c_str());
  }
  return static_cast<T>(value);
}

Args Parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage((flag + " needs a value").c_str());
      return argv[++i];
    };
    if (flag == "--backing") args.backing = value();
    else if (flag == "--cbt-out") args.cbt_out = value();
    else if (flag == "--queues") args.queues = Number<uint32_t>("--queues", value());
    else if (flag == "--depth") args.depth = Number<uint32_t>("--depth", value());
    else if (flag == "--max-io") args.max_io = Number<uint32_t>("--max-io", value());
    else if (flag == "--hold-ms") args.hold_ms = Number<uint32_t>("--hold-ms", value());
    else if (flag == "--recover") args.recover_id = Number<int64_t>("--recover", value());
    else if (flag == "--state") args.state_id = Number<int64_t>("--state", value());
    else if (flag == "--buffered") args.buffered = true;
    else if (flag == "--no-recovery") args.recovery = false;
    else Usage(("unknown option " + flag).c_str());
  }
  if (args.state_id < 0 && args.backing.empty()) Usage("--backing is required");
  if (args.queues == 0 || args.queues > 64 || args.depth == 0 || args.depth > 1024) {
    Usage("--queues must be 1..64 and --depth 1..1024");
  }
  return args;
}

int Fail(const absl::Status& status) {
  fprintf(stderr, "ublk-serve: %s\n", status.ToString().c_str());
  return 1;
}

// Marks the CBT map before every content change reaches the backing.
class CbtObserver : public cbt::ublk::WriteObserver {
 public:
  explicit CbtObserver(cbt::CbtMap* map) : map_(map) {}
  int BeforeWrite(uint64_t offset, uint64_t length) override {
    absl::Status s = map_->Set(offset >> 9, (offset + length + 511) / 512 - offset / 512);
    if (!s.ok()) fprintf(stderr, "ublk-serve: CBT: %s\n", s.ToString().c_str());
    return 0;  // tracking trouble must not fail the guest's I/O
  }

 private:
  cbt::CbtMap* map_;
};

int PrintState(uint32_t dev_id) {
  auto control = cbt::ublk::UblkControl::Open();
  if (!control.ok()) return Fail(control.status());
  cbt::ublk::ublksrv_ctrl_dev_info info;
  if (absl::Status s = (*control)->GetDeviceInfo(dev_id, &info); !s.ok()) return Fail(s);
  printf("STATE %s pid=%d flags=%#" PRIx64 " queues=%u depth=%u\n",
         cbt::ublk::DeviceStateName(info.state).c_str(), info.ublksrv_pid, info.flags,
         info.nr_hw_queues, info.queue_depth);
  return 0;
}

int Snapshot(UblkDevice& device, cbt::CbtMap* map, int n) {
  absl::Time start = absl::Now();
  if (absl::Status s = device.Quiesce(absl::Seconds(30)); !s.ok()) return Fail(s);
  absl::Duration quiesce = absl::Now() - start;
  if (map != nullptr) map->Switch();
  device.Resume();
  printf("SNAPSHOT %d quiesce_us=%" PRId64 "\n", n, absl::ToInt64Microseconds(quiesce));
  fflush(stdout);
  return 0;
}

// Quiesces, holds new requests for `hold`, resumes.
int Hold(UblkDevice& device, absl::Duration hold) {
  if (absl::Status s = device.Quiesce(absl::Seconds(30)); !s.ok()) return Fail(s);
  printf("QUIESCED\n");
  fflush(stdout);
  absl::SleepFor(hold);
  device.Resume();
  printf("RESUMED\n");
  fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args = Parse(argc, argv);
  // Before any thread exists, so the signals reach only sigwait below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);
  sigaddset(&signals, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (args.state_id >= 0) return PrintState(static_cast<uint32_t>(args.state_id));

  cbt::ublk::FileTargetOptions target_options;
  target_options.direct_io = !args.buffered;
  auto target = FileTarget::Open(args.backing, target_options);
  if (!target.ok()) return Fail(target.status());

  cbt::ublk::UblkDeviceOptions options;
  (*target)->ConfigureDevice(&options);
  options.queue_count = static_cast<uint16_t>(args.queues);
  options.queue_depth = static_cast<uint16_t>(args.depth);
  options.max_io_bytes = args.max_io;
  options.user_recovery = args.recovery;
  options.recovery_reissue = args.recovery;

  std::unique_ptr<cbt::CbtMap> map;
  std::unique_ptr<CbtObserver> observer;
  if (!args.cbt_out.empty()) {
    auto created = cbt::CbtMap::Create(options.capacity_sectors);
    if (!created.ok()) return Fail(created.status());
    map = std::move(*created);
    observer = std::make_unique<CbtObserver>(map.get());
    (*target)->set_write_observer(observer.get());
  }

  absl::StatusOr<std::unique_ptr<UblkDevice>> device =
      args.recover_id >= 0
          ? UblkDevice::Recover(static_cast<uint32_t>(args.recover_id), target->get())
          : UblkDevice::Create(options, target->get());
  if (!device.ok()) return Fail(device.status());
  if (absl::Status s = (*device)->WaitForBlockDevice(absl::Seconds(10)); !s.ok()) return Fail(s);
  const cbt::ublk::BackingInfo& backing = (*target)->backing();
  printf("READY %s id=%u features=%#" PRIx64 " flags=%#" PRIx64 " queues=%u depth=%u direct=%d\n",
         (*device)->block_device_path().c_str(), (*device)->id(), (*device)->features(),
         (*device)->flags(), (*device)->info().nr_hw_queues, (*device)->info().queue_depth,
         backing.direct_io ? 1 : 0);
  fflush(stdout);

  int snapshots = 0;
  while (true) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGUSR1) {
      if (int rc = Snapshot(**device, map.get(), ++snapshots); rc != 0) return rc;
    } else if (sig == SIGUSR2) {
      if (int rc = Hold(**device, absl::Milliseconds(args.hold_ms)); rc != 0) return rc;
    } else {
      break;
    }
  }
  if (map != nullptr) {
    if (int rc = Snapshot(**device, map.get(), ++snapshots); rc != 0) return rc;
    cbt::CbtInfo info = map->Info();
    std::vector<uint8_t> bytes(info.block_count);
    if (absl::Status s = map->ReadMap(0, bytes.size(), bytes.data()); !s.ok()) return Fail(s);
    std::ofstream out(args.cbt_out, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) return Fail(absl::InternalError("cannot write " + args.cbt_out));
  }
  absl::Status stopped = (*device)->Delete();
  if (!stopped.ok()) fprintf(stderr, "ublk-serve: %s\n", stopped.ToString().c_str());
  FileTarget::Stats st = (*target)->stats();
  printf("STATS reads=%" PRIu64 " writes=%" PRIu64 " fua=%" PRIu64 " flushes=%" PRIu64
         " discards=%" PRIu64 " write_zeroes=%" PRIu64 " errors=%" PRIu64 " read_bytes=%" PRIu64
         " written_bytes=%" PRIu64 "\n",
         st.reads, st.writes, st.fua_writes, st.flushes, st.discards, st.write_zeroes, st.errors,
         st.bytes_read, st.bytes_written);
  fflush(stdout);
  device->reset();
  return stopped.ok() ? 0 : 1;
}
