// Host tests of the device options -> ADD_DEV / SET_PARAMS translation (no kernel needed).
#include <gtest/gtest.h>

#include "ublk/device.h"

namespace cbt::ublk {
namespace {

UblkDeviceOptions Valid() {
  UblkDeviceOptions o;
  o.capacity_sectors = 131072;  // 64 MiB
  return o;
}

TEST(DeviceOptionsTest, DefaultsAreValid) {
  EXPECT_TRUE(ValidateDeviceOptions(Valid()).ok());
}

TEST(DeviceOptionsTest, RejectsBadGeometry) {
  auto with = [](auto change) {
    UblkDeviceOptions o = Valid();
    change(o);
    return ValidateDeviceOptions(o);
  };
  EXPECT_FALSE(with([](auto& o) { o.capacity_sectors = 0; }).ok());
  EXPECT_FALSE(with([](auto& o) { o.logical_block_shift = 8; }).ok());
  EXPECT_FALSE(with([](auto& o) { o.logical_block_shift = 13; }).ok());
  EXPECT_FALSE(with([](auto& o) { o.physical_block_shift = 9, o.logical_block_shift = 12; }).ok());
  EXPECT_FALSE(with([](auto& o) {
                 o.logical_block_shift = 12;
                 o.capacity_sectors = 9;  // not a whole 4 KiB block
               }).ok());
  EXPECT_FALSE(with([](auto& o) { o.queue_count = 0; }).ok());
  EXPECT_FALSE(with([](auto& o) { o.queue_depth = 0; }).ok());
  EXPECT_FALSE(with([](auto& o) { o.queue_depth = 2000; }).ok());
  EXPECT_FALSE(with([](auto& o) { o.max_io_bytes = 1000; }).ok());
  EXPECT_FALSE(with([](auto& o) { o.max_io_bytes = 64u << 20; }).ok());
  EXPECT_FALSE(with([](auto& o) { o.user_recovery = false; }).ok());  // reissue still asked
  EXPECT_TRUE(with([](auto& o) { o.user_recovery = o.recovery_reissue = false; }).ok());
  EXPECT_FALSE(with([](auto& o) { o.discard_granularity = 100; }).ok());
  absl::Status s = with([](auto& o) { o.queue_depth = 0; });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("queue depth 0"), std::string::npos);
}

TEST(DeviceOptionsTest, DeviceInfoAsksForRecovery) {
  UblkDeviceOptions o = Valid();
  o.queue_count = 2;
  o.queue_depth = 32;
  ublksrv_ctrl_dev_info info = BuildDeviceInfo(o, /*features=*/0x1fe);
  EXPECT_EQ(info.nr_hw_queues, 2);
  EXPECT_EQ(info.queue_depth, 32);
  EXPECT_EQ(info.max_io_buf_bytes, 1u << 20);  // the default: a 1 MiB write is one request
  EXPECT_EQ(info.dev_id, kAnyDeviceId);
  EXPECT_EQ(info.flags, kFCmdIoctlEncode | kFUserRecovery | kFUserRecoveryReissue);
  // A driver that lists its features but lacks REISSUE is not asked for it.
  info = BuildDeviceInfo(o, kFUserRecovery | kFCmdIoctlEncode);
  EXPECT_EQ(info.flags, kFCmdIoctlEncode | kFUserRecovery);
  // Unknown features (no GET_FEATURES before 6.5): asked anyway, ADD_DEV drops what is missing.
  info = BuildDeviceInfo(o, 0);
  EXPECT_TRUE(info.flags & kFUserRecoveryReissue);
  o.user_recovery = o.recovery_reissue = false;
  EXPECT_EQ(BuildDeviceInfo(o, 0x1fe).flags, kFCmdIoctlEncode);
  // A proxy forwards to a device with its own scheduler (docs/BENCHMARKS.md).
  EXPECT_EQ(UblkDeviceOptions{}.io_scheduler, "none");
}

TEST(DeviceOptionsTest, ParamsCarryCacheAttributesAndGeometry) {
  UblkDeviceOptions o = Valid();
  o.logical_block_shift = 12;
  o.physical_block_shift = 12;
  ublk_params p = BuildParams(o, 256 << 10);
  EXPECT_EQ(p.len, sizeof(ublk_params));
  EXPECT_EQ(p.types, kParamTypeBasic);
  EXPECT_EQ(p.basic.attrs, kAttrVolatileCache | kAttrFua);
  EXPECT_EQ(p.basic.logical_bs_shift, 12);
  EXPECT_EQ(p.basic.physical_bs_shift, 12);
  EXPECT_EQ(p.basic.io_min_shift, 12);
  EXPECT_EQ(p.basic.io_opt_shift, 12);
  EXPECT_EQ(p.basic.max_sectors, 512u);  // from the kernel's max_io_buf_bytes
  EXPECT_EQ(p.basic.dev_sectors, 131072u);
  EXPECT_EQ(p.basic.chunk_sectors, 0u);

  o.volatile_cache = false;
  o.read_only = true;
  o.rotational = true;
  EXPECT_EQ(BuildParams(o, 256 << 10).basic.attrs, kAttrReadOnly | kAttrRotational);
}

TEST(DeviceOptionsTest, DiscardParamsOnlyWhenAsked) {
  UblkDeviceOptions o = Valid();
  o.max_write_zeroes_sectors = 2048;
  ublk_params p = BuildParams(o, 512 << 10);
  EXPECT_EQ(p.types, kParamTypeBasic | kParamTypeDiscard);
  EXPECT_EQ(p.discard.discard_granularity, 512u);  // zero became the logical block
  EXPECT_EQ(p.discard.max_discard_sectors, 0u);
  EXPECT_EQ(p.discard.max_write_zeroes_sectors, 2048u);
  EXPECT_EQ(p.discard.max_discard_segments, 1);

  o.discard_granularity = 4096;
  o.max_discard_sectors = 8192;
  p = BuildParams(o, 512 << 10);
  EXPECT_EQ(p.discard.discard_granularity, 4096u);
  EXPECT_EQ(p.discard.max_discard_sectors, 8192u);
}

}  // namespace
}  // namespace cbt::ublk
