// The blksnap user-space interface, every flavour the agent speaks, defined once.
//
// Layouts and numbers are those of ../shared/reference/blksnap.md §1 and §4 (x86_64, LP64),
// checked here field by field. Three flavours exist in the field:
//   lk6.15 : upstream lk6.15 port / veeam/blksnap master. BLKFILTER_* 142..144 on the block
//            device (attach/detach structs of their own), /dev/blksnap-control,
//            images "blksnap-M-N", events corrupted=0, no_space=1.
//   v7     : upstream v7 / lk6.9 patches. BLKFILTER_* 140..142 with the 32-byte name struct,
//            /dev/blksnap-control, images "blksnap-image_M:N", event corrupted=0.
//   val7   : Veeam's out-of-tree VAL-7.0 modules. Filter ioctls on the misc device
//            /dev/bdevfilter with the device path inside the struct, control /dev/veeamblksnap,
//            images "veeamblksnapimg_M:N", events corrupted=0, low_free_space=1.
// Hazard: v7's BLKFILTER_CTL code equals lk6.15's BLKFILTER_ATTACH code, so the flavour is
// decided before any filter ioctl is sent, never by trial.
#ifndef CBT_AGENT_BLKSNAP_UAPI_H_
#define CBT_AGENT_BLKSNAP_UAPI_H_

#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace cbt::blksnap {

enum class Flavour { kLk615, kV7, kVal7 };

inline constexpr char kFilterName[] = "blksnap";
inline constexpr size_t kFilterNameLength = 32;
inline constexpr size_t kImageDiskNameLength = 32;
inline constexpr char kUpstreamControlDevice[] = "/dev/blksnap-control";
inline constexpr char kVal7ControlDevice[] = "/dev/veeamblksnap";
inline constexpr char kVal7FilterDevice[] = "/dev/bdevfilter";

// ---- block-device filter framework (lk6.15 and v7: ioctls on the block device itself) ----

struct blkfilter_name {  // v7 attach and detach
  uint8_t name[kFilterNameLength];
};
static_assert(sizeof(blkfilter_name) == 32 && alignof(blkfilter_name) == 1);

struct blkfilter_attach {  // lk6.15
  uint8_t name[kFilterNameLength];
  uint64_t opt;     // user pointer to options (blksnap ignores them)
  uint32_t optlen;
};
static_assert(sizeof(blkfilter_attach) == 48 && alignof(blkfilter_attach) == 8);
static_assert(offsetof(blkfilter_attach, opt) == 32 && offsetof(blkfilter_attach, optlen) == 40);

struct blkfilter_detach {  // lk6.15
  uint8_t name[kFilterNameLength];
};
static_assert(sizeof(blkfilter_detach) == 32);

struct blkfilter_ctl {  // every blkfilter flavour
  uint8_t name[kFilterNameLength];
  uint32_t cmd;     // enum FilterCtlCommand
  uint32_t optlen;  // size of the buffer at `opt`; not copied back by the kernel
  uint64_t opt;     // user pointer
};
static_assert(sizeof(blkfilter_ctl) == 48 && alignof(blkfilter_ctl) == 8);
static_assert(offsetof(blkfilter_ctl, cmd) == 32 && offsetof(blkfilter_ctl, optlen) == 36 &&
              offsetof(blkfilter_ctl, opt) == 40);

inline constexpr unsigned long kV7BlkfilterAttach = _IOWR(0x12, 140, blkfilter_name);
inline constexpr unsigned long kV7BlkfilterDetach = _IOWR(0x12, 141, blkfilter_name);
inline constexpr unsigned long kV7BlkfilterCtl = _IOWR(0x12, 142, blkfilter_ctl);
inline constexpr unsigned long kLk615BlkfilterAttach = _IOWR(0x12, 142, blkfilter_attach);
inline constexpr unsigned long kLk615BlkfilterDetach = _IOWR(0x12, 143, blkfilter_detach);
inline constexpr unsigned long kLk615BlkfilterCtl = _IOWR(0x12, 144, blkfilter_ctl);
static_assert(kV7BlkfilterAttach == 0xC020128C && kV7BlkfilterDetach == 0xC020128D &&
              kV7BlkfilterCtl == 0xC030128E);
static_assert(kLk615BlkfilterAttach == 0xC030128E && kLk615BlkfilterDetach == 0xC020128F &&
              kLk615BlkfilterCtl == 0xC0301290);
static_assert(kV7BlkfilterCtl == kLk615BlkfilterAttach, "the documented hazard");

// ---- VAL-7.0 bdevfilter misc device (/dev/bdevfilter) ----

struct bdevfilter_name {
  uint64_t devpath;  // user pointer to the NUL-terminated block device path
  uint8_t name[kFilterNameLength];
};
static_assert(sizeof(bdevfilter_name) == 40 && offsetof(bdevfilter_name, name) == 8);

struct bdevfilter_ctl {
  uint64_t devpath;
  uint8_t name[kFilterNameLength];
  uint32_t cmd;
  uint32_t optlen;
  uint64_t opt;
};
static_assert(sizeof(bdevfilter_ctl) == 56 && offsetof(bdevfilter_ctl, name) == 8 &&
              offsetof(bdevfilter_ctl, cmd) == 40 && offsetof(bdevfilter_ctl, optlen) == 44 &&
              offsetof(bdevfilter_ctl, opt) == 48);

inline constexpr unsigned long kVal7BdevfilterAttach = _IOWR('F', 140, bdevfilter_name);
inline constexpr unsigned long kVal7BdevfilterDetach = _IOWR('F', 141, bdevfilter_name);
inline constexpr unsigned long kVal7BdevfilterCtl = _IOWR('F', 142, bdevfilter_ctl);
static_assert(kVal7BdevfilterAttach == 0xC028468C && kVal7BdevfilterDetach == 0xC028468D &&
              kVal7BdevfilterCtl == 0xC038468E);

// ---- blksnap filter ctl commands and their payloads (identical in all three flavours) ----

enum FilterCtlCommand : uint32_t {
  kCtlCbtInfo = 0,
  kCtlCbtMap = 1,
  kCtlCbtDirty = 2,
  kCtlSnapshotAdd = 3,
  kCtlSnapshotInfo = 4,
};

struct blksnap_uuid {
  uint8_t b[16];
};
static_assert(sizeof(blksnap_uuid) == 16 && alignof(blksnap_uuid) == 1);

struct blksnap_cbtinfo {
  uint64_t device_capacity;  // bytes
  uint32_t block_size;
  uint32_t block_count;
  blksnap_uuid generation_id;
  uint8_t changes_number;
};
static_assert(sizeof(blksnap_cbtinfo) == 40 && alignof(blksnap_cbtinfo) == 8);
static_assert(offsetof(blksnap_cbtinfo, block_size) == 8 &&
              offsetof(blksnap_cbtinfo, block_count) == 12 &&
              offsetof(blksnap_cbtinfo, generation_id) == 16 &&
              offsetof(blksnap_cbtinfo, changes_number) == 32);

struct blksnap_cbtmap {
  uint32_t offset;  // byte offset into the map
  uint32_t length;
  uint64_t buffer;  // user pointer
};
static_assert(sizeof(blksnap_cbtmap) == 16 && offsetof(blksnap_cbtmap, length) == 4 &&
              offsetof(blksnap_cbtmap, buffer) == 8);

struct blksnap_sectors {
  uint64_t offset;  // sectors
  uint64_t count;   // sectors
};
static_assert(sizeof(blksnap_sectors) == 16 && offsetof(blksnap_sectors, count) == 8);

struct blksnap_cbtdirty {
  uint32_t count;
  uint64_t dirty_sectors;  // user pointer to blksnap_sectors[count]
};
static_assert(sizeof(blksnap_cbtdirty) == 16 && offsetof(blksnap_cbtdirty, dirty_sectors) == 8);

struct blksnap_snapshotadd {
  blksnap_uuid id;
};
static_assert(sizeof(blksnap_snapshotadd) == 16);

struct blksnap_snapshotinfo {
  int32_t error_code;  // 0 or negative errno
  uint8_t image[kImageDiskNameLength];
};
static_assert(sizeof(blksnap_snapshotinfo) == 36 && alignof(blksnap_snapshotinfo) == 4 &&
              offsetof(blksnap_snapshotinfo, image) == 4);

// ---- control device ioctls (type 'V'; v7, lk6.15 and VAL-7.0 share them) ----

struct blksnap_version {
  uint16_t major;
  uint16_t minor;
  uint16_t revision;
  uint16_t build;
};
static_assert(sizeof(blksnap_version) == 8 && alignof(blksnap_version) == 2 &&
              offsetof(blksnap_version, build) == 6);

struct blksnap_snapshot_create {
  uint64_t diff_storage_limit_sect;
  uint64_t diff_storage_filename;  // user pointer to a NUL-terminated path
  blksnap_uuid id;                 // out
};
static_assert(sizeof(blksnap_snapshot_create) == 32 &&
              offsetof(blksnap_snapshot_create, diff_storage_filename) == 8 &&
              offsetof(blksnap_snapshot_create, id) == 16);

struct blksnap_snapshot_collect {
  uint32_t count;  // in: capacity of `ids`; out: entries filled (or total when ids == 0)
  uint64_t ids;    // user pointer to blksnap_uuid[count], 0 to ask for the count
};
static_assert(sizeof(blksnap_snapshot_collect) == 16 &&
              offsetof(blksnap_snapshot_collect, ids) == 8);

inline constexpr size_t kEventDataSize = 4064;

struct blksnap_snapshot_event {
  blksnap_uuid id;      // in
  uint32_t timeout_ms;  // in; really jiffies (see blksnap-real-module.md §4)
  uint32_t code;        // out
  int64_t time_label;   // out: ktime_get() nanoseconds
  uint8_t data[kEventDataSize];
};
static_assert(sizeof(blksnap_snapshot_event) == 4096 &&
              offsetof(blksnap_snapshot_event, timeout_ms) == 16 &&
              offsetof(blksnap_snapshot_event, code) == 20 &&
              offsetof(blksnap_snapshot_event, time_label) == 24 &&
              offsetof(blksnap_snapshot_event, data) == 32);

struct blksnap_event_corrupted {
  uint32_t dev_id_mj;
  uint32_t dev_id_mn;
  int32_t err_code;  // positive errno
};
static_assert(sizeof(blksnap_event_corrupted) == 12 &&
              offsetof(blksnap_event_corrupted, err_code) == 8);

struct blksnap_event_no_space {  // lk6.15 no_space and VAL-7.0 low_free_space
  uint64_t requested_nr_sect;
};
static_assert(sizeof(blksnap_event_no_space) == 8);

inline constexpr unsigned long kIoctlVersion = _IOR('V', 0, blksnap_version);
inline constexpr unsigned long kIoctlSnapshotCreate = _IOWR('V', 1, blksnap_snapshot_create);
inline constexpr unsigned long kIoctlSnapshotDestroy = _IOW('V', 2, blksnap_uuid);
inline constexpr unsigned long kIoctlSnapshotTake = _IOW('V', 3, blksnap_uuid);
inline constexpr unsigned long kIoctlSnapshotCollect = _IOR('V', 4, blksnap_snapshot_collect);
inline constexpr unsigned long kIoctlSnapshotWaitEvent = _IOR('V', 5, blksnap_snapshot_event);
static_assert(kIoctlVersion == 0x80085600 && kIoctlSnapshotCreate == 0xC0205601 &&
              kIoctlSnapshotDestroy == 0x40105602 && kIoctlSnapshotTake == 0x40105603 &&
              kIoctlSnapshotCollect == 0x80105604 && kIoctlSnapshotWaitEvent == 0x90005605);

enum EventCode : uint32_t {
  kEventCorrupted = 0,
  kEventNoSpace = 1,       // lk6.15
  kEventLowFreeSpace = 1,  // VAL-7.0 (same number, other meaning)
};

// BLKGETSIZE64 from <linux/fs.h>, repeated to keep this header free of it.
inline constexpr unsigned long kBlkGetSize64 = _IOR(0x12, 114, size_t);
static_assert(kBlkGetSize64 == 0x80081272);

}  // namespace cbt::blksnap

#endif  // CBT_AGENT_BLKSNAP_UAPI_H_
