#!/usr/bin/env bash
# crash_recovery.sh AGENT CBTCTL — in the VM. Scenario 5: the agent is killed (SIGKILL) while fio
# writes through the proxy (rate-limited, crc32c verify headers) and a snapshot is held. The
# proxy stays and holds the I/O (USER_RECOVERY: QUIESCED, fio waits, nothing reaches the
# origin); the agent started again with the same state directory recovers the same /dev/ublkbN,
# fio completes without an I/O error, and a verify-only pass finds every block intact. CBT
# starts a new generation (the crash may have lost marks): extents since the old base fail with
# "full backup required". The snapshot did not survive: none is listed, its image is removed;
# a new one works.
source "$(dirname "$0")/lib.sh"

size=$((32 << 20)) written=$((16 << 20))
start_tracked $size

id=$(snapshot_create 32M "$diff_dir" "$origin")
check "snapshot held across the crash ($id)" test -n "$id"
image=$(image_of "$id" "$origin")
check "its image is a block device ($image)" test -b "$image"
read -r gen k <<< "$(cbt_info "$origin")"

# 64 KiB sequential writes at 2 MiB/s (~8 s): the kill lands mid-run. Verify reads unthrottled.
job=(--filename="$proxy" --size=$written --rw=write --bs=64k --iodepth=4)
fio_job crash "${job[@]}" --rate=,2m > "$scratch/crash.out" 2>&1 &
fio_pid=$!
cleanup_hooks+=("pkill -KILL -P $fio_pid; kill -KILL $fio_pid 2>/dev/null")
check "fio is writing (4 MiB reached the origin)" wait_allocated "$scratch/origin.img" $(((4 << 20) / 512))

kill_agent
ok "agent killed (SIGKILL) mid-run"
nap 0.5
before=$(stat -c %b "$scratch/origin.img")
nap 2
check "the proxy stays ($proxy)" test -b "$proxy"
check "fio waits (still running)" kill -0 "$fio_pid"
expect_eq "no write reaches the origin while no agent serves the proxy (blocks allocated)" \
  "$before" "$(stat -c %b "$scratch/origin.img")"
check "fio has not written everything yet" test "$before" -lt $((written / 512))
image_char=/dev/ublkc${image#/dev/ublkb}
check "the image's ublk device is left behind ($image_char)" test -c "$image_char"

if ! start_agent agent2; then fail "agent starts again"; finish; fi
ok "agent starts again with the same state directory"
check "agent log: $origin recovered as $proxy" grep -q "recovered $origin as $proxy" "$agent_log"
expect_eq "tracker keeps the same proxy" "$proxy" "$(ctlj tracker "$origin" | jfield '.io_path')"
if wait_pid "$fio_pid" 90; then
  wait "$fio_pid"
  rc=$?
  if [ $rc -eq 0 ]; then
    expect_eq "fio completes without I/O errors (written, verified)" "$written $written" \
      "$(cat "$scratch/crash.out")"
  else
    fail "fio completes without I/O errors" "exit $rc: $(cat "$scratch/crash.out")"
  fi
else
  fail "fio completes" "still running 90 s after the restart"
fi
expect_fio "verify-only pass: every block intact (verified)" \
  "$written" verify "${job[@]}" --verify_only
now=$(sum_of "$proxy" 0 $size)
expect_eq "the origin holds what the proxy shows" "$now" "$(sum_of "$origin" 0 $size)"

read -r gen2 k2 <<< "$(cbt_info "$origin")"
check "CBT has a new generation ($gen -> $gen2)" test "$gen2" != "$gen"
ctl cbt extents "$origin" --base-generation "$gen" --base-changes "$k" \
  > "$scratch/extents.out" 2> "$scratch/extents.err"
expect_eq "extents since the old base fail (cbtctl exit status 1: RPC error)" 1 $?
check "... with FAILED_PRECONDITION" grep -q "FAILED_PRECONDITION" "$scratch/extents.err"
check "... flagged 'full backup required' (trailer)" grep -q "^full backup required" "$scratch/extents.err"

expect_eq "the snapshot is gone" 0 "$(ctlj snapshots | jq '.snapshots | length')"
check "snapshot get $id: NOT_FOUND" bash -c "'$CBTCTL' --address unix:$sock snapshot get $id 2>&1 | grep -q NOT_FOUND"
check "its image is removed ($image, $image_char)" bash -c "! test -e '$image' && ! test -e '$image_char'"
check "agent log: the snapshot did not survive" grep -q "snapshot $id did not survive" "$agent_log"

id2=$(snapshot_create 32M "$diff_dir" "$origin")
check "a new snapshot after the recovery ($id2)" test -n "$id2"
expect_eq "its image equals the origin" "$now" "$(sum_of "$(image_of "$id2" "$origin")" 0 $size)"
check "release it" ctl snapshot release "$id2"
check "detach" ctl detach "$origin"
expect_clean_stop
finish
