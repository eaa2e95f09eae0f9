#!/usr/bin/env bash
# device_faults.sh AGENT CBTCTL — in the VM (needs dm-mod). Faults of a tracked device with a
# second, healthy one beside it:
#   1. the backing device returns I/O errors (device-mapper "error" table swapped in): I/O on
#      its proxy fails with EIO (no hang), the agent keeps answering for it, and the other device
#      keeps working, snapshots included; once the device is healthy again the proxy works and
#      the data written before the fault is intact;
#   2. the device is removed while tracked (dmsetup remove --force: fails all I/O, the node goes
#      once nothing holds it): the proxy fails I/O, the other device is unaffected, and the
#      tracker can still be detached by the path it was attached with.
source "$(dirname "$0")/lib.sh"
export DM_DISABLE_UDEV=1  # no udev in the guest: libdevmapper makes the nodes itself

dm=cbt-fault-$$
backing=$(make_loop a 32M) || { fail "loop device a"; finish; }
origin_b=$(make_loop b 32M) || { fail "loop device b"; finish; }
sectors=$(blockdev --getsz "$backing")
set_table() { dmsetup suspend "$dm" && dmsetup load "$dm" --table "0 $sectors $1" && dmsetup resume "$dm"; }
if ! dmsetup create "$dm" --table "0 $sectors linear $backing 0" 2> "$scratch/dm.err"; then
  fail "device-mapper device" "$(cat "$scratch/dm.err")"
  finish
fi
cleanup_hooks+=("dmsetup remove --force $dm 2>/dev/null")
origin_a=/dev/mapper/$dm
ok "device-mapper device $origin_a over $backing"

if ! start_agent agent --device_allow="/dev/*" --device_allow="/dev/mapper/*"; then fail "agent starts"; finish; fi
proxy_a=$(attach "$origin_a")
proxy_b=$(attach "$origin_b")
check "both attached ($proxy_a, $proxy_b)" test -b "$proxy_a" -a -b "$proxy_b"
pattern "$scratch/data" $((1 << 20))
want=$(md5sum < "$scratch/data" | cut -d' ' -f1)
write_at "$proxy_a" 0 $((1 << 20)) "$scratch/data"
write_at "$proxy_b" 0 $((1 << 20)) "$scratch/data"

# 1. I/O errors.
check "the device starts failing every I/O" set_table error
check "a write through its proxy fails (EIO), promptly" \
  bash -c "! timeout 30 dd if='$scratch/data' of='$proxy_a' bs=64k count=1 seek=32 oflag=direct status=none"
check "a read through its proxy fails (EIO), promptly" \
  bash -c "! timeout 30 dd if='$proxy_a' of=/dev/null bs=64k count=1 iflag=direct status=none"
check "the agent still answers for it" ctl cbt info "$origin_a"
check "the other device keeps working (write)" write_at "$proxy_b" $((2 << 20)) $((1 << 20)) "$scratch/data"
expect_eq "the other device keeps working (read)" "$want" "$(sum_of "$proxy_b" $((2 << 20)) $((1 << 20)))"
id=$(snapshot_create 16M "$diff_dir" "$origin_b")
check "a snapshot of the other device works ($id)" test -n "$id"
check "release it" ctl snapshot release "$id"
check "the device heals" set_table "linear $backing 0"
check "its proxy works again" write_at "$proxy_a" $((2 << 20)) $((1 << 20)) "$scratch/data"
expect_eq "data written before the fault is intact" "$want" "$(sum_of "$proxy_a" 0 $((1 << 20)))"
expect_eq "data written after it too" "$want" "$(sum_of "$proxy_a" $((2 << 20)) $((1 << 20)))"

# 2. Removal while tracked.
dmsetup remove --force "$dm" > /dev/null 2>&1  # in use: the table becomes "error", removal waits
check "I/O on the removed device's proxy fails, promptly" \
  bash -c "! timeout 30 dd if='$proxy_a' of=/dev/null bs=64k count=1 iflag=direct status=none"
expect_eq "the other device is unaffected" "$want" "$(sum_of "$proxy_b" 0 $((1 << 20)))"
check "detach the removed device by its attach path" ctl detach "$origin_a"
nap 0.5
check "its proxy is gone" bash -c "! test -e '$proxy_a'"
dmsetup remove "$dm" > /dev/null 2>&1
check "nothing holds the removed device any more (dm device gone)" bash -c "! dmsetup info '$dm' > /dev/null 2>&1"
expect_eq "trackers left: only the healthy device" "$origin_b" "$(ctlj trackers | jq -r '.trackers[].device')"
expect_clean_stop
finish
