// Fuzz target for the in-process blksnap emulator (tests/blksnap_emulator/emulated_kernel.h):
// fuzzed ioctl requests (uapi.h's plus random numbers) with fuzzed struct bytes on a small
// emulated device, for each flavour. Every user pointer inside a struct is replaced by 0 or a
// pointer into a buffer this target owns, with lengths clamped to that buffer, so any crash is
// the emulator's. Must never crash or hang; returns are errno values.
#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "blksnap/uapi.h"
#include "tests/blksnap_emulator/emulated_kernel.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using namespace cbt::blksnap;
using namespace cbt::blksnap::emulator;
using cbt::fuzz::Input;

#define CHECK(cond)                \
  do {                             \
    if (!(cond)) __builtin_trap(); \
  } while (0)

constexpr char kDev[] = "/dev/loop0";
constexpr uint64_t kDevSize = 4 << 20;

// Made once per process; removed at exit.
struct TempDirs {
  std::string root;
  std::string backing;
  std::string storage;
  std::string storage_file;
  TempDirs() {
    const char* base = getenv("TMPDIR");
    std::string templ = std::string(base && *base ? base : "/tmp") + "/cbt-uapi-fuzz-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    CHECK(mkdtemp(buf.data()) != nullptr);
    root = buf.data();
    backing = root + "/backing";
    storage = root + "/storage";
    storage_file = root + "/storage.img";
    CHECK(mkdir(backing.c_str(), 0700) == 0);
    CHECK(mkdir(storage.c_str(), 0700) == 0);
    const int fd = open(storage_file.c_str(), O_CREAT | O_RDWR, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, 8 << 20) == 0);
    close(fd);
  }
  ~TempDirs() {
    std::string cmd = "rm -rf '" + root + "'";
    if (system(cmd.c_str()) != 0) {
    }
  }
};

TempDirs& Dirs() {
  static TempDirs* dirs = new TempDirs();
  static bool registered = [] {
    atexit([] { delete dirs; });
    return true;
  }();
  (void)registered;
  return *dirs;
}

// "User memory": the ioctl argument, the ctl option payload, a data area for maps, dirty
// ranges and collected ids, and a string area. All owned here and large enough for the
// clamped lengths; the string area always ends in NUL.
struct UserBuffers {
  alignas(64) uint8_t arg[16384];
  alignas(64) uint8_t opt[4096];
  alignas(64) uint8_t data[65536];
  alignas(64) char str[4200];
};

uint64_t Ptr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

template <class T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
void Store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

class Driver {
 public:
  Driver(Input& in, UserBuffers& b, Flavour flavour) : in_(in), b_(b), flavour_(flavour) {}

  // A string pointer: 0, or one of a few paths (only ever inside our temp dir or emulated).
  uint64_t StringPointer() {
    std::string s;
    switch (in_.U8() % 9) {
      case 0:
        return 0;
      case 1:
        s = Dirs().storage;
        break;
      case 2:
        s = Dirs().storage_file;
        break;
      case 3:
        s = kDev;
        break;
      case 4:
        s = Dirs().root + "/missing";
        break;
      case 5:
        s = "relative";
        break;
      case 6:
        s = "";
        break;
      case 7:
        s = std::string(4150, 'a');  // longer than PATH_MAX
        break;
      case 8: {  // a fuzzed name inside the temp dir, without '/' or NUL
        std::string name = in_.String(40);
        for (char& c : name) {
          if (c == '/' || c == '\0' || c == '.') c = '_';
        }
        s = Dirs().root + "/" + name;
        break;
      }
    }
    std::memset(b_.str, 0, sizeof b_.str);
    std::memcpy(b_.str, s.data(), std::min(s.size(), sizeof b_.str - 1));
    return Ptr(b_.str);
  }

  // Patches the payload at `opt` of a filter ctl for `cmd`.
  void PatchCtlPayload(uint32_t cmd) {
    if (cmd == kCtlCbtMap) {
      uint8_t* p = b_.opt;
      const uint32_t length = Load<uint32_t>(p + 4) % (sizeof b_.data + 1);
      Store<uint32_t>(p + 4, length);
      Store<uint64_t>(p + 8, in_.U8() % 8 == 0 ? 0 : Ptr(b_.data));
    } else if (cmd == kCtlCbtDirty) {
      uint8_t* p = b_.opt;
      const uint32_t count =
          Load<uint32_t>(p) % (sizeof b_.data / sizeof(blksnap_sectors) + 1);
      Store<uint32_t>(p, count);
      Store<uint64_t>(p + 8, in_.U8() % 8 == 0 ? 0 : Ptr(b_.data));
    }
  }

  // opt pointer and optlen of a ctl struct at the given offsets.
  void PatchCtl(size_t cmd_off, size_t optlen_off, size_t opt_off) {
    uint8_t* a = b_.arg;
    Store<uint32_t>(a + optlen_off, Load<uint32_t>(a + optlen_off) % (sizeof b_.opt + 1));
    Store<uint64_t>(a + opt_off, in_.U8() % 8 == 0 ? 0 : Ptr(b_.opt));
    PatchCtlPayload(Load<uint32_t>(a + cmd_off));
  }

  // Makes every user pointer of `request`'s struct (as this flavour decodes it) safe.
  void Patch(unsigned long request) {
    uint8_t* a = b_.arg;
    const bool val7 = flavour_ == Flavour::kVal7;
    if (flavour_ == Flavour::kLk615 && request == kLk615BlkfilterAttach) {
      Store<uint64_t>(a + 32, in_.U8() % 4 == 0 ? 0 : Ptr(b_.opt));
      Store<uint32_t>(a + 40, Load<uint32_t>(a + 40) % (sizeof b_.opt + 1));
    } else if (flavour_ == Flavour::kLk615 && request == kLk615BlkfilterCtl) {
      PatchCtl(32, 36, 40);
    } else if (flavour_ == Flavour::kV7 && request == kV7BlkfilterCtl) {
      PatchCtl(32, 36, 40);
    } else if (val7 && (request == kVal7BdevfilterAttach || request == kVal7BdevfilterDetach)) {
      Store<uint64_t>(a, StringPointer());
    } else if (val7 && request == kVal7BdevfilterCtl) {
      Store<uint64_t>(a, StringPointer());
      PatchCtl(40, 44, 48);
    } else if (request == kIoctlSnapshotCreate) {
      Store<uint64_t>(a + 8, StringPointer());
    } else if (request == kIoctlSnapshotCollect) {
      Store<uint32_t>(a, Load<uint32_t>(a) % (sizeof b_.data / sizeof(blksnap_uuid) + 1));
      Store<uint64_t>(a + 8, in_.U8() % 4 == 0 ? 0 : Ptr(b_.data));
    } else if (request == kIoctlSnapshotWaitEvent) {
      Store<uint32_t>(a + 16, Load<uint32_t>(a + 16) % 2);  // 0 or 4 ms: no slow inputs
    }
    // Every other request (and every random one) carries no user pointer.
  }

  unsigned long Request() {
    static const unsigned long kKnown[] = {
        kV7BlkfilterAttach,    kV7BlkfilterDetach,      kV7BlkfilterCtl,
        kLk615BlkfilterAttach, kLk615BlkfilterDetach,   kLk615BlkfilterCtl,
        kVal7BdevfilterAttach, kVal7BdevfilterDetach,   kVal7BdevfilterCtl,
        kIoctlVersion,         kIoctlSnapshotCreate,    kIoctlSnapshotDestroy,
        kIoctlSnapshotTake,    kIoctlSnapshotCollect,   kIoctlSnapshotWaitEvent,
        kBlkGetSize64,         0x80285620 /* val7 mod */, 0x40185621 /* setlog */,
        0x40285622 /* append storage */};
    const uint8_t pick = in_.U8();
    if (pick < 224) return kKnown[pick % (sizeof kKnown / sizeof kKnown[0])];
    return in_.Bool() ? in_.U32() : in_.U64();
  }

  // Remembered ids (snapshots created) to reuse in later structs.
  std::vector<blksnap_uuid> ids;

  void MaybeInsertId(unsigned long request) {
    if (ids.empty() || in_.U8() % 2 == 0) return;
    const blksnap_uuid& id = ids[in_.U8() % ids.size()];
    if (request == kIoctlSnapshotDestroy || request == kIoctlSnapshotTake ||
        request == kIoctlSnapshotWaitEvent || request == 0x40285622) {
      std::memcpy(b_.arg, &id, sizeof id);
    }
    // SNAPSHOT_ADD payload.
    std::memcpy(b_.opt, &id, sizeof id);
  }

  void FillFilterName() {
    // Most filter structs start (or, for val7, continue) with the name "blksnap".
    if (in_.U8() % 4 == 0) return;
    uint8_t* name = flavour_ == Flavour::kVal7 ? b_.arg + 8 : b_.arg;
    std::memset(name, 0, kFilterNameLength);
    std::memcpy(name, kFilterName, sizeof kFilterName - 1);
  }

 private:
  Input& in_;
  UserBuffers& b_;
  Flavour flavour_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Dirs();
  const Flavour flavour = static_cast<Flavour>(in.U8() % 3);
  EmulatorOptions options;
  options.flavour = flavour;
  options.backing_dir = Dirs().backing;
  options.chunk_size = 64 * 1024;
  options.diff_storage_reserved_bytes = 0;
  options.tracking.minimum_shift = 12;
  EmulatedKernel kernel(options);
  CHECK(kernel.AddDevice(kDev, kDevSize, 7, 0).ok());

  auto buffers = std::make_unique<UserBuffers>();
  UserBuffers& b = *buffers;
  Driver driver(in, b, flavour);

  const std::string control = flavour == Flavour::kVal7 ? kVal7ControlDevice
                                                        : kUpstreamControlDevice;
  std::vector<int> fds;
  auto open_path = [&](const std::string& path, int flags) {
    int fd = -1;
    const int error = kernel.Open(path, flags, &fd);
    CHECK(error >= 0);
    if (error == 0) fds.push_back(fd);
  };
  open_path(control, O_RDWR);
  open_path(kDev, O_RDWR);
  if (flavour == Flavour::kVal7) open_path(kVal7FilterDevice, O_RDWR);

  std::string last_image;
  int ops = 0;
  while (!in.empty() && ops++ < 64) {
    switch (in.U8() % 8) {
      default: {  // ioctl
        const unsigned long request = driver.Request();
        std::memset(b.arg, 0, sizeof b.arg);
        std::memset(b.opt, 0, sizeof b.opt);
        in.Bytes(b.arg, in.U8() % 72);
        in.Bytes(b.opt, in.U8() % 48);
        if (in.Bool()) in.Bytes(b.data, in.U8() * 4);
        driver.FillFilterName();
        driver.MaybeInsertId(request);
        driver.Patch(request);
        int fd = 12345;
        const uint8_t which = in.U8();
        if (!fds.empty() && which < 240) fd = fds[which % fds.size()];
        const int error = kernel.Ioctl(fd, request, in.U8() % 32 == 0 ? nullptr : b.arg);
        CHECK(error >= 0 && error < 4096);
        if (error == 0 && request == kIoctlSnapshotCreate) {
          blksnap_uuid id;
          std::memcpy(&id, b.arg + 16, sizeof id);
          driver.ids.push_back(id);
        }
        if (error == 0 && std::memchr(b.opt + 4, 0, kImageDiskNameLength) != nullptr &&
            b.opt[4] != 0) {
          last_image = reinterpret_cast<const char*>(b.opt + 4);
        }
        break;
      }
      case 5: {  // open/close
        const uint8_t what = in.U8();
        if (what % 4 == 0 && !fds.empty()) {
          const size_t i = in.U8() % fds.size();
          CHECK(kernel.Close(fds[i]) >= 0);
          fds.erase(fds.begin() + i);
        } else if (fds.size() < 16) {
          const char* paths[] = {kDev, kUpstreamControlDevice, kVal7ControlDevice,
                                 kVal7FilterDevice, "/dev/null", "/dev/loop1"};
          std::string path = paths[what % 6];
          if (what % 7 == 0 && !last_image.empty()) path = "/dev/" + last_image;
          open_path(path, (in.Bool() ? O_RDWR : O_RDONLY) | (in.U8() % 8 == 0 ? O_EXCL : 0));
        }
        break;
      }
      case 6: {  // origin or image write (CBT marking, copy-on-write)
        const uint64_t offset = (in.U32() % (kDevSize + 8192)) & ~uint64_t{511};
        std::string bytes((in.U8() % 8 + 1) * 512, static_cast<char>(in.U8()));
        std::string path = kDev;
        if (in.Bool() && !last_image.empty()) path = "/dev/" + last_image;
        (void)kernel.WriteDevice(path, offset, bytes);
        break;
      }
      case 7: {  // read, resize, remove
        const uint8_t what = in.U8() % 8;
        if (what == 0) {
          (void)kernel.ResizeDevice(kDev, (1 + in.U8() % 16) * 512 * 1024);
        } else if (what == 1) {
          (void)kernel.RemoveDevice(kDev);
        } else {
          std::string path = kDev;
          if (in.Bool() && !last_image.empty()) path = "/dev/" + last_image;
          (void)kernel.ReadDevice(path, in.U32() % (kDevSize + 4096), in.U16() % 8192);
        }
        break;
      }
    }
  }
  for (int fd : fds) kernel.Close(fd);
  return 0;
}
