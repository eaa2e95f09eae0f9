#!/usr/bin/env bash
# geometry.sh PATH/TO/ublk-serve — in the VM. Backing = a loop device with 4096-byte sectors over
# a 32 MiB file: /dev/ublkbN's capacity and logical/physical block sizes equal the loop device's,
# the write cache is "write back" with FUA (what lets FLUSH/FUA reach the target), requests are
# capped at 512 KiB (ublk-serve's --max-io default), the I/O scheduler is "none" (set by
# UblkDevice), a 4 KiB O_DIRECT write through ublk reads back through the loop device, and
# a 512-byte O_DIRECT write is refused (the device really has 4 KiB logical blocks).
source "$(dirname "$0")/lib.sh"

truncate -s 32M "$scratch/loop.img"
loopdev=$(losetup -f --show --sector-size 4096 "$scratch/loop.img") || { fail "losetup"; finish; }
cleanup_hooks+=("losetup -d $loopdev")
ok "losetup --sector-size 4096 ($loopdev)"

if ! start_server geometry --backing "$loopdev"; then
  fail "ublk-serve ready"
  finish
fi
ok "ublk-serve ready ($DEV)"
ub=/sys/block/${DEV#/dev/}
lo=/sys/block/${loopdev#/dev/}
expect_eq "size in sectors equals the loop device's" "$(cat $lo/size)" "$(cat $ub/size)"
expect_eq "logical_block_size equals the loop device's" "$(cat $lo/queue/logical_block_size)" \
  "$(cat $ub/queue/logical_block_size)"
expect_eq "physical_block_size equals the loop device's" "$(cat $lo/queue/physical_block_size)" \
  "$(cat $ub/queue/physical_block_size)"
expect_eq "logical block is 4096" 4096 "$(cat $ub/queue/logical_block_size)"
expect_eq "blockdev --getsize64" "$(blockdev --getsize64 "$loopdev")" "$(blockdev --getsize64 "$DEV")"
expect_eq "write_cache" "write back" "$(cat $ub/queue/write_cache)"
expect_eq "fua" 1 "$(cat $ub/queue/fua)"
expect_eq "max_hw_sectors_kb" 512 "$(cat $ub/queue/max_hw_sectors_kb)"
check "I/O scheduler is none ($(cat $ub/queue/scheduler))" grep -q '\[none\]' $ub/queue/scheduler

pattern "$scratch/pattern" 65536
check "64 KiB O_DIRECT write through ublk reads back through the loop device" bash -c "
  dd if='$scratch/pattern' of='$DEV' bs=64k count=1 seek=16 oflag=direct status=none &&
  cmp '$scratch/pattern' <(dd if='$loopdev' bs=64k count=1 skip=16 iflag=direct status=none)"
check "512-byte O_DIRECT write is refused" bash -c \
  "! dd if=/dev/zero of='$DEV' bs=512 count=1 seek=1 oflag=direct status=none 2>/dev/null"
check_stop "SIGTERM: STOP_DEV + DEL_DEV, exit 0"
grep '^STATS' "$server_log" | sed 's/^/     /'
expect_eq "request errors" 0 "$(stat_field errors)"
finish
