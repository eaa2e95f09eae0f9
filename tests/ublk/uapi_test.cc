// Host tests of the ublk uapi definitions, opcode encoding and SQE layout (no kernel needed).
#include <gtest/gtest.h>
#include <liburing.h>

#include <cstring>

#include "ublk/control.h"
#include "ublk/queue.h"
#include "ublk/uapi.h"
#include "ublk/uring_cmd.h"

namespace cbt::ublk {
namespace {

TEST(UapiTest, ControlOpcodesMatchTheKernelEncoding) {
  EXPECT_EQ(ControlOpcode(kCmdAddDev, CommandEncoding::kIoctl), 0xC0207504u);
  EXPECT_EQ(ControlOpcode(kCmdAddDev, CommandEncoding::kLegacy), 0x04u);
  EXPECT_EQ(ControlOpcode(kCmdGetDevInfo, CommandEncoding::kIoctl), 0x80207502u);
  EXPECT_EQ(ControlOpcode(kCmdGetParams, CommandEncoding::kIoctl), 0x80207509u);
  EXPECT_EQ(ControlOpcode(kCmdStartUserRecovery, CommandEncoding::kIoctl), 0xC0207510u);
  EXPECT_EQ(ControlOpcode(kCmdEndUserRecovery, CommandEncoding::kLegacy), 0x11u);
  EXPECT_EQ(ControlOpcode(kCmdGetFeatures, CommandEncoding::kIoctl), 0x80207513u);
  EXPECT_EQ(ControlOpcode(0x7f, CommandEncoding::kIoctl), 0u);
  // The type, number and size fields of an encoded opcode.
  EXPECT_EQ(_IOC_TYPE(kUCmdStopDev), 'u');
  EXPECT_EQ(_IOC_NR(kUCmdStopDev), kCmdStopDev);
  EXPECT_EQ(_IOC_SIZE(kUCmdStopDev), sizeof(ublksrv_ctrl_cmd));
  EXPECT_EQ(_IOC_SIZE(kUIoFetchReq), sizeof(ublksrv_io_cmd));
  EXPECT_EQ(_IOC_DIR(kUIoCommitAndFetchReq), _IOC_READ | _IOC_WRITE);
}

TEST(UapiTest, Names) {
  EXPECT_STREQ(ControlCommandName(kCmdStartDev), "START_DEV");
  EXPECT_STREQ(ControlCommandName(kCmdGetFeatures), "GET_FEATURES");
  EXPECT_STREQ(ControlCommandName(0x7f), "UNKNOWN");
  EXPECT_EQ(DeviceStateName(kDevStateQuiesced), "QUIESCED");
  EXPECT_EQ(DeviceStateName(9), "UNKNOWN(9)");
  EXPECT_EQ(FeatureNames(0), "0");
  EXPECT_EQ(FeatureNames(kFUserRecovery | kFCmdIoctlEncode), "USER_RECOVERY|CMD_IOCTL_ENCODE");
  // What 6.12's GET_FEATURES answered in the guest.
  EXPECT_EQ(FeatureNames(0x1fe),
            "URING_CMD_COMP_IN_TASK|NEED_GET_DATA|USER_RECOVERY|USER_RECOVERY_REISSUE|"
            "UNPRIVILEGED_DEV|CMD_IOCTL_ENCODE|USER_COPY|ZONED");
  EXPECT_EQ(FeatureNames(uint64_t{1} << 40), "0x10000000000");
}

TEST(UapiTest, DescriptorArrayGeometry) {
  EXPECT_EQ(CmdBufSize(64, 4096), 4096u);      // 64 * 24 = 1536 -> one page
  EXPECT_EQ(CmdBufSize(200, 4096), 8192u);     // 4800 -> two pages
  EXPECT_EQ(CmdBufOffset(0, 4096), 0u);
  EXPECT_EQ(CmdBufOffset(3, 4096), 3u * 98304u);
}

TEST(UapiTest, IoDescriptorOpAndFlags) {
  ublksrv_io_desc d{};
  d.op_flags = kIoOpWrite | kIoFFua;
  EXPECT_EQ(IoDescOp(d), kIoOpWrite);
  EXPECT_EQ(IoDescFlags(d), kIoFFua);
  EXPECT_EQ(kIoFFua, 1u << 13);
  EXPECT_EQ(kIoFNoUnmap, 1u << 15);
}

TEST(UapiTest, TargetUserDataRoundTrips) {
  uint64_t ud = EncodeTargetUserData(4095, 0xdeadbeef);
  EXPECT_TRUE(ud & kTargetUserDataBit);
  EXPECT_FALSE(ud & kInternalUserDataBit);
  EXPECT_EQ(TargetUserDataTag(ud), 4095);
  EXPECT_EQ(TargetUserDataSub(ud), 0xdeadbeefu);
}

TEST(UapiTest, IoCommandLandsInTheSqeCommandArea) {
  alignas(64) unsigned char raw[64];
  memset(raw, 0xaa, sizeof(raw));
  auto* sqe = reinterpret_cast<io_uring_sqe*>(raw);
  ublksrv_io_cmd cmd{};
  cmd.q_id = 2;
  cmd.tag = 7;
  cmd.result = -5;
  cmd.addr = 0x1122334455667788ull;
  PrepareIoCommand(sqe, 0, /*fixed_file=*/true, kUIoCommitAndFetchReq, cmd, 7);
  EXPECT_EQ(sqe->opcode, IORING_OP_URING_CMD);
  EXPECT_EQ(sqe->flags, IOSQE_FIXED_FILE);
  EXPECT_EQ(sqe->fd, 0);
  EXPECT_EQ(sqe->cmd_op, kUIoCommitAndFetchReq);
  EXPECT_EQ(sqe->user_data, 7u);
  EXPECT_EQ(memcmp(raw + 48, &cmd, sizeof(cmd)), 0);
}

TEST(UapiTest, ControlCommandUsesTheWide128ByteArea) {
  alignas(64) unsigned char raw[128];
  memset(raw, 0xaa, sizeof(raw));
  auto* sqe = reinterpret_cast<io_uring_sqe*>(raw);
  ublksrv_ctrl_cmd cmd{};
  cmd.dev_id = 3;
  cmd.queue_id = kNoQueue;
  cmd.data[0] = 1234;
  PrepareControlCommand(sqe, 9, kUCmdStartDev, cmd, 42);
  EXPECT_EQ(sqe->fd, 9);
  EXPECT_EQ(sqe->cmd_op, kUCmdStartDev);
  EXPECT_EQ(memcmp(raw + 48, &cmd, sizeof(cmd)), 0);
  for (size_t i = 48 + sizeof(cmd); i < sizeof(raw); ++i) EXPECT_EQ(raw[i], 0) << i;
}

TEST(ControlTest, MissingControlDeviceIsUnavailable) {
  auto control = UblkControl::Open("/nonexistent/ublk-control");
  ASSERT_FALSE(control.ok());
  EXPECT_EQ(control.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(control.status().message().find("open /nonexistent/ublk-control"), std::string::npos);
  EXPECT_NE(control.status().message().find("(errno 2)"), std::string::npos);
}

}  // namespace
}  // namespace cbt::ublk
