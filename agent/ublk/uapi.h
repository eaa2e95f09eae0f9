// The ublk user-space interface (include/uapi/linux/ublk_cmd.h), every struct and constant the
// agent uses, defined once.
//
// Deliberately not <linux/ublk_cmd.h>: Debian 12's linux-libc-dev (6.1) lacks the ioctl-encoded
// opcodes, GET_FEATURES, the newer flags and struct fields. Layouts are x86_64/LP64 and are
// checked here field by field against mainline; numbers follow shared/reference/ublk.md §1.
//
// Two corrections to the reference notes, both checked against the kernel source:
//   * struct ublksrv_io_desc is 24 bytes (u32 op_flags, u32 nr_sectors, u64 start_sector,
//     u64 addr), not 16; a queue's descriptor array is round_up(depth * 24, PAGE_SIZE) bytes and
//     queue q's array sits at q * round_up(4096 * 24, PAGE_SIZE) in /dev/ublkcN.
//   * struct ublk_params as 6.6..6.15 know it (header, basic, discard, devt, zoned) is 112
//     bytes; newer kernels append dma/segment/integrity. The kernel copies min(len, its size),
//     so this shorter struct works everywhere it matters.
#ifndef CBT_AGENT_UBLK_UAPI_H_
#define CBT_AGENT_UBLK_UAPI_H_

#include <linux/ioctl.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace cbt::ublk {

inline constexpr char kControlDevicePath[] = "/dev/ublk-control";
inline constexpr char kCharDevicePrefix[] = "/dev/ublkc";   // + device id
inline constexpr char kBlockDevicePrefix[] = "/dev/ublkb";  // + device id

// ---- control commands (IORING_OP_URING_CMD on /dev/ublk-control, 128-byte SQEs) ----

struct ublksrv_ctrl_cmd {
  uint32_t dev_id;    // target device; UINT32_MAX on ADD_DEV = "any id"
  uint16_t queue_id;  // 0xffff unless the command is per queue
  uint16_t len;       // length of the buffer at addr
  uint64_t addr;      // user buffer, in or out
  uint64_t data[1];   // inline argument (pid, queue id, ...)
  uint16_t dev_path_len;  // unprivileged mode / GET_DEV_INFO2 only
  uint16_t pad;
  uint32_t reserved;
};
static_assert(sizeof(ublksrv_ctrl_cmd) == 32 && alignof(ublksrv_ctrl_cmd) == 8);
static_assert(offsetof(ublksrv_ctrl_cmd, queue_id) == 4 && offsetof(ublksrv_ctrl_cmd, len) == 6 &&
              offsetof(ublksrv_ctrl_cmd, addr) == 8 && offsetof(ublksrv_ctrl_cmd, data) == 16 &&
              offsetof(ublksrv_ctrl_cmd, dev_path_len) == 24 &&
              offsetof(ublksrv_ctrl_cmd, reserved) == 28);

inline constexpr uint32_t kAnyDeviceId = UINT32_MAX;
inline constexpr uint16_t kNoQueue = 0xffff;

struct ublksrv_ctrl_dev_info {
  uint16_t nr_hw_queues;
  uint16_t queue_depth;
  uint16_t state;  // kDevState*
  uint16_t pad0;
  uint32_t max_io_buf_bytes;
  uint32_t dev_id;
  int32_t ublksrv_pid;
  uint32_t pad1;
  uint64_t flags;          // UBLK_F_* requested; negotiated result written back by ADD_DEV
  uint64_t ublksrv_flags;  // private to the server
  uint32_t owner_uid;      // filled in by the kernel
  uint32_t owner_gid;
  uint64_t reserved1;
  uint64_t reserved2;
};
static_assert(sizeof(ublksrv_ctrl_dev_info) == 64 && alignof(ublksrv_ctrl_dev_info) == 8);
static_assert(offsetof(ublksrv_ctrl_dev_info, state) == 4 &&
              offsetof(ublksrv_ctrl_dev_info, max_io_buf_bytes) == 8 &&
              offsetof(ublksrv_ctrl_dev_info, dev_id) == 12 &&
              offsetof(ublksrv_ctrl_dev_info, ublksrv_pid) == 16 &&
              offsetof(ublksrv_ctrl_dev_info, flags) == 24 &&
              offsetof(ublksrv_ctrl_dev_info, ublksrv_flags) == 32 &&
              offsetof(ublksrv_ctrl_dev_info, owner_uid) == 40 &&
              offsetof(ublksrv_ctrl_dev_info, reserved1) == 48);

// Legacy command numbers (_IOC_NR of the encoded forms). Accepted by 6.0..6.3 only as such, and
// later only with CONFIG_BLKDEV_UBLK_LEGACY_OPCODES.
inline constexpr uint32_t kCmdGetQueueAffinity = 0x01;
inline constexpr uint32_t kCmdGetDevInfo = 0x02;
inline constexpr uint32_t kCmdAddDev = 0x04;
inline constexpr uint32_t kCmdDelDev = 0x05;
inline constexpr uint32_t kCmdStartDev = 0x06;
inline constexpr uint32_t kCmdStopDev = 0x07;
inline constexpr uint32_t kCmdSetParams = 0x08;
inline constexpr uint32_t kCmdGetParams = 0x09;
inline constexpr uint32_t kCmdStartUserRecovery = 0x10;
inline constexpr uint32_t kCmdEndUserRecovery = 0x11;
inline constexpr uint32_t kCmdGetDevInfo2 = 0x12;
inline constexpr uint32_t kCmdGetFeatures = 0x13;  // encoded form only (6.5+)
inline constexpr uint32_t kCmdDelDevAsync = 0x14;  // encoded form only (6.9+)

// ioctl-encoded control opcodes (6.4+; the kernel always reports UBLK_F_CMD_IOCTL_ENCODE).
inline constexpr uint32_t kUCmdGetQueueAffinity = _IOR('u', kCmdGetQueueAffinity, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdGetDevInfo = _IOR('u', kCmdGetDevInfo, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdAddDev = _IOWR('u', kCmdAddDev, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdDelDev = _IOWR('u', kCmdDelDev, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdStartDev = _IOWR('u', kCmdStartDev, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdStopDev = _IOWR('u', kCmdStopDev, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdSetParams = _IOWR('u', kCmdSetParams, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdGetParams = _IOR('u', kCmdGetParams, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdStartUserRecovery =
    _IOWR('u', kCmdStartUserRecovery, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdEndUserRecovery = _IOWR('u', kCmdEndUserRecovery, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdGetDevInfo2 = _IOR('u', kCmdGetDevInfo2, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdGetFeatures = _IOR('u', kCmdGetFeatures, ublksrv_ctrl_cmd);
inline constexpr uint32_t kUCmdDelDevAsync = _IOR('u', kCmdDelDevAsync, ublksrv_ctrl_cmd);
static_assert(kUCmdGetQueueAffinity == 0x80207501u && kUCmdGetDevInfo == 0x80207502u &&
              kUCmdAddDev == 0xC0207504u && kUCmdDelDev == 0xC0207505u &&
              kUCmdStartDev == 0xC0207506u && kUCmdStopDev == 0xC0207507u &&
              kUCmdSetParams == 0xC0207508u && kUCmdGetParams == 0x80207509u &&
              kUCmdStartUserRecovery == 0xC0207510u && kUCmdEndUserRecovery == 0xC0207511u &&
              kUCmdGetDevInfo2 == 0x80207512u && kUCmdGetFeatures == 0x80207513u &&
              kUCmdDelDevAsync == 0x80207514u);

inline constexpr uint32_t kFeaturesLength = 8;  // GET_FEATURES: len must be exactly 8

// ---- I/O commands (IORING_OP_URING_CMD on /dev/ublkcN, normal 64-byte SQEs) ----

struct ublksrv_io_cmd {
  uint16_t q_id;
  uint16_t tag;
  int32_t result;  // COMMIT_AND_FETCH: bytes done or -errno
  uint64_t addr;   // the tag's I/O buffer (copy mode); zone-append LBA on commit
};
static_assert(sizeof(ublksrv_io_cmd) == 16 && alignof(ublksrv_io_cmd) == 8);
static_assert(offsetof(ublksrv_io_cmd, tag) == 2 && offsetof(ublksrv_io_cmd, result) == 4 &&
              offsetof(ublksrv_io_cmd, addr) == 8);

inline constexpr uint32_t kIoFetchReq = 0x20;
inline constexpr uint32_t kIoCommitAndFetchReq = 0x21;
inline constexpr uint32_t kIoNeedGetData = 0x22;
inline constexpr uint32_t kUIoFetchReq = _IOWR('u', kIoFetchReq, ublksrv_io_cmd);
inline constexpr uint32_t kUIoCommitAndFetchReq = _IOWR('u', kIoCommitAndFetchReq, ublksrv_io_cmd);
inline constexpr uint32_t kUIoNeedGetData = _IOWR('u', kIoNeedGetData, ublksrv_io_cmd);
static_assert(kUIoFetchReq == 0xC0107520u && kUIoCommitAndFetchReq == 0xC0107521u &&
              kUIoNeedGetData == 0xC0107522u);

// CQE results of an armed FETCH / COMMIT_AND_FETCH.
inline constexpr int kIoResOk = 0;            // a request is ready: read its descriptor
inline constexpr int kIoResNeedGetData = 1;   // UBLK_F_NEED_GET_DATA only
inline constexpr int kIoResAbort = -ENODEV;   // device stopping (or recovering): do not re-arm

// One descriptor per tag in the read-only mmapped array of each queue.
struct ublksrv_io_desc {
  uint32_t op_flags;      // bits 0-7 op, bits 8-31 flags
  uint32_t nr_sectors;    // nr_zones for REPORT_ZONES
  uint64_t start_sector;  // 512-byte sectors
  uint64_t addr;          // the server buffer for this request
};
static_assert(sizeof(ublksrv_io_desc) == 24 && alignof(ublksrv_io_desc) == 8);
static_assert(offsetof(ublksrv_io_desc, nr_sectors) == 4 &&
              offsetof(ublksrv_io_desc, start_sector) == 8 &&
              offsetof(ublksrv_io_desc, addr) == 16);

inline constexpr uint8_t IoDescOp(const ublksrv_io_desc& d) { return d.op_flags & 0xff; }
inline constexpr uint32_t IoDescFlags(const ublksrv_io_desc& d) { return d.op_flags & ~0xffu; }

// Ops (bits 0-7 of op_flags).
inline constexpr uint8_t kIoOpRead = 0;
inline constexpr uint8_t kIoOpWrite = 1;
inline constexpr uint8_t kIoOpFlush = 2;
inline constexpr uint8_t kIoOpDiscard = 3;
inline constexpr uint8_t kIoOpWriteSame = 4;  // defined, never generated
inline constexpr uint8_t kIoOpWriteZeroes = 5;
inline constexpr uint8_t kIoOpZoneOpen = 10;
inline constexpr uint8_t kIoOpZoneClose = 11;
inline constexpr uint8_t kIoOpZoneFinish = 12;
inline constexpr uint8_t kIoOpZoneAppend = 13;
inline constexpr uint8_t kIoOpZoneResetAll = 14;
inline constexpr uint8_t kIoOpZoneReset = 15;
inline constexpr uint8_t kIoOpReportZones = 18;

// Flags, as they sit in op_flags (already shifted by 8).
inline constexpr uint32_t kIoFFailfastDev = 1u << 8;
inline constexpr uint32_t kIoFFailfastTransport = 1u << 9;
inline constexpr uint32_t kIoFFailfastDriver = 1u << 10;
inline constexpr uint32_t kIoFMeta = 1u << 11;
inline constexpr uint32_t kIoFFua = 1u << 13;
inline constexpr uint32_t kIoFNoUnmap = 1u << 15;  // WRITE_ZEROES: keep the blocks allocated
inline constexpr uint32_t kIoFSwap = 1u << 16;

// The descriptor arrays in /dev/ublkcN: queue q at CmdBufOffset(q), CmdBufSize(depth) bytes.
inline constexpr uint64_t kCmdBufOffset = 0;
inline constexpr uint32_t kMaxQueueDepth = 4096;
inline constexpr uint32_t kMaxQueues = 4096;
inline constexpr uint32_t kMaxIoBufBytes = 1u << 25;  // 32 MiB per request
inline constexpr uint64_t RoundUp(uint64_t value, uint64_t unit) {
  return (value + unit - 1) / unit * unit;
}
inline constexpr uint64_t CmdBufSize(uint32_t depth, uint64_t page_size) {
  return RoundUp(uint64_t{depth} * sizeof(ublksrv_io_desc), page_size);
}
inline constexpr uint64_t CmdBufOffset(uint32_t queue_id, uint64_t page_size) {
  return kCmdBufOffset + queue_id * CmdBufSize(kMaxQueueDepth, page_size);
}
static_assert(CmdBufSize(64, 4096) == 4096 && CmdBufSize(4096, 4096) == 98304 &&
              CmdBufOffset(1, 4096) == 98304);

// ---- device flags (ublksrv_ctrl_dev_info.flags; GET_FEATURES mask) ----

inline constexpr uint64_t kFSupportZeroCopy = 1ull << 0;
inline constexpr uint64_t kFUringCmdCompInTask = 1ull << 1;
inline constexpr uint64_t kFNeedGetData = 1ull << 2;
inline constexpr uint64_t kFUserRecovery = 1ull << 3;
inline constexpr uint64_t kFUserRecoveryReissue = 1ull << 4;
inline constexpr uint64_t kFUnprivilegedDev = 1ull << 5;
inline constexpr uint64_t kFCmdIoctlEncode = 1ull << 6;
inline constexpr uint64_t kFUserCopy = 1ull << 7;
inline constexpr uint64_t kFZoned = 1ull << 8;
inline constexpr uint64_t kFUserRecoveryFailIo = 1ull << 9;
inline constexpr uint64_t kFUpdateSize = 1ull << 10;
inline constexpr uint64_t kFAutoBufReg = 1ull << 11;
inline constexpr uint64_t kFQuiesce = 1ull << 12;
inline constexpr uint64_t kFPerIoDaemon = 1ull << 13;
inline constexpr uint64_t kFBufRegOffDaemon = 1ull << 14;
inline constexpr uint64_t kFBatchIo = 1ull << 15;
inline constexpr uint64_t kFIntegrity = 1ull << 16;
inline constexpr uint64_t kFSafeStopDev = 1ull << 17;
inline constexpr uint64_t kFNoAutoPartScan = 1ull << 18;
inline constexpr uint64_t kFShmemZc = 1ull << 19;

// Device states (ublksrv_ctrl_dev_info.state).
inline constexpr uint16_t kDevStateDead = 0;
inline constexpr uint16_t kDevStateLive = 1;
inline constexpr uint16_t kDevStateQuiesced = 2;
inline constexpr uint16_t kDevStateFailIo = 3;

// ---- parameters (SET_PARAMS / GET_PARAMS) ----

inline constexpr uint32_t kAttrReadOnly = 1u << 0;
inline constexpr uint32_t kAttrRotational = 1u << 1;
inline constexpr uint32_t kAttrVolatileCache = 1u << 2;  // write-back cache: FLUSH is sent
inline constexpr uint32_t kAttrFua = 1u << 3;            // honoured only with VOLATILE_CACHE

struct ublk_param_basic {
  uint32_t attrs;
  uint8_t logical_bs_shift;   // 9 ..= PAGE_SHIFT
  uint8_t physical_bs_shift;  // >= logical
  uint8_t io_opt_shift;
  uint8_t io_min_shift;
  uint32_t max_sectors;  // <= max_io_buf_bytes >> 9
  uint32_t chunk_sectors;
  uint64_t dev_sectors;  // capacity
  uint64_t virt_boundary_mask;
};
static_assert(sizeof(ublk_param_basic) == 32);
static_assert(offsetof(ublk_param_basic, logical_bs_shift) == 4 &&
              offsetof(ublk_param_basic, io_min_shift) == 7 &&
              offsetof(ublk_param_basic, max_sectors) == 8 &&
              offsetof(ublk_param_basic, dev_sectors) == 16 &&
              offsetof(ublk_param_basic, virt_boundary_mask) == 24);

struct ublk_param_discard {
  uint32_t discard_alignment;
  uint32_t discard_granularity;  // must be nonzero when the type is set
  uint32_t max_discard_sectors;  // 0: no discard
  uint32_t max_write_zeroes_sectors;  // 0: no write-zeroes
  uint16_t max_discard_segments;  // must be 1 when max_discard_sectors != 0
  uint16_t reserved0;
};
static_assert(sizeof(ublk_param_discard) == 20);
static_assert(offsetof(ublk_param_discard, max_write_zeroes_sectors) == 12 &&
              offsetof(ublk_param_discard, max_discard_segments) == 16);

struct ublk_param_devt {  // read-only: GET_PARAMS fills it in
  uint32_t char_major;
  uint32_t char_minor;
  uint32_t disk_major;  // 0 until the disk exists
  uint32_t disk_minor;
};
static_assert(sizeof(ublk_param_devt) == 16);

struct ublk_param_zoned {
  uint32_t max_open_zones;
  uint32_t max_active_zones;
  uint32_t max_zone_append_sectors;
  uint8_t reserved[20];
};
static_assert(sizeof(ublk_param_zoned) == 32);

inline constexpr uint32_t kParamTypeBasic = 1u << 0;
inline constexpr uint32_t kParamTypeDiscard = 1u << 1;
inline constexpr uint32_t kParamTypeDevt = 1u << 2;
inline constexpr uint32_t kParamTypeZoned = 1u << 3;
inline constexpr uint32_t kParamTypeDmaAlign = 1u << 4;
inline constexpr uint32_t kParamTypeSegment = 1u << 5;

struct ublk_params {
  uint32_t len;    // sizeof(ublk_params) for both SET and GET
  uint32_t types;  // kParamType* present
  ublk_param_basic basic;
  ublk_param_discard discard;
  ublk_param_devt devt;
  ublk_param_zoned zoned;
};
static_assert(sizeof(ublk_params) == 112 && alignof(ublk_params) == 8);
static_assert(offsetof(ublk_params, types) == 4 && offsetof(ublk_params, basic) == 8 &&
              offsetof(ublk_params, discard) == 40 && offsetof(ublk_params, devt) == 60 &&
              offsetof(ublk_params, zoned) == 76);

}  // namespace cbt::ublk

#endif  // CBT_AGENT_UBLK_UAPI_H_
