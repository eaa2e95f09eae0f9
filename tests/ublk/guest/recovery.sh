#!/usr/bin/env bash
# recovery.sh PATH/TO/ublk-serve — in the VM. USER_RECOVERY(+REISSUE) under load:
#   1. ublk-serve A serves a 64 MiB file; fio writes 8 MiB of 4 KiB random blocks with crc32c
#      verify headers (rate-limited, so it is mid-run when A dies);
#   2. kill -9 A: the device goes QUIESCED and fio's I/O waits (fio keeps running);
#   3. ublk-serve B --recover ID: START/END_USER_RECOVERY, the device is LIVE with B's pid, and
#      fio finishes without a single I/O error (the requests A held were re-issued);
#   4. a separate fio --verify_only pass re-reads every block the write job wrote — those A
#      acknowledged before it died and those B served after — and finds no corruption;
#   5. B stops cleanly (STOP_DEV + DEL_DEV).
source "$(dirname "$0")/lib.sh"

backing=$scratch/backing.img
truncate -s 64M "$backing"
if ! start_server first --backing "$backing"; then
  fail "ublk-serve A ready"
  finish
fi
ok "ublk-serve A ready ($DEV)"
dev=$DEV id=$DEV_ID
check "state LIVE, served by A" bash -c "'$SERVE' --state $id | grep -q '^STATE LIVE pid=$server_pid '"
"$SERVE" --state "$id" | sed 's/^/     /'

job=(--name=recover --filename="$dev" --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k
     --iodepth=16 --size=8M --verify=crc32c --verify_fatal=1)
fio "${job[@]}" --do_verify=0 --rate_iops=400 > "$scratch/fio-write.log" 2>&1 &
fio_pid=$!
# Kill A once it has acknowledged some writes: tmpfs allocates the backing file's blocks as
# they are written (st_blocks in 512-byte units; 100 writes of 4 KiB = 800).
check "A acknowledged >= 100 writes (they reached the backing file)" wait_allocated "$backing" 800
check "fio is mid-run when A is killed" kill -0 "$fio_pid"
first_pid=$server_pid
kill -KILL "$first_pid"
wait "$first_pid" 2>/dev/null
server_pid=""
ok "kill -9 ublk-serve A"

wait_state() {  # wait_state STATE: polls the device state for up to 10 s
  local i
  for ((i = 0; i < 200; i++)); do
    "$SERVE" --state "$id" 2>/dev/null | grep -q "^STATE $1 " && return 0
    nap 0.05
  done
  "$SERVE" --state "$id"
  return 1
}
check "device QUIESCED after the kill" wait_state QUIESCED
check "$dev still exists" test -b "$dev"
check "fio still running (its I/O waits, it did not fail)" kill -0 "$fio_pid"

if ! start_server second --backing "$backing" --recover "$id"; then
  fail "ublk-serve B --recover $id ready"
  finish
fi
ok "ublk-serve B --recover $id ready ($DEV)"
expect_eq "same device" "$dev" "$DEV"
check "state LIVE, served by B" bash -c "'$SERVE' --state $id | grep -q '^STATE LIVE pid=$server_pid '"

if wait "$fio_pid"; then
  ok "fio write job finished without errors across the kill"
else
  fail "fio write job" "$(tail -n 15 "$scratch/fio-write.log")"
fi
grep -E '^ +WRITE:' "$scratch/fio-write.log" | sed 's/^ */     /'
check "fio --verify_only over every block written (before and after the kill)" \
  fio "${job[@]}" --verify_only --do_verify=1
check "the device equals the backing file (the 8 MiB fio wrote)" \
  cmp <(dd if="$dev" bs=1M count=8 iflag=direct status=none) <(head -c 8M "$backing")

check_stop "SIGTERM: STOP_DEV + DEL_DEV, exit 0"
grep '^STATS' "$server_log" | sed 's/^/     /'
expect_eq "request errors (B)" 0 "$(stat_field errors)"
check "B served only part of the 2048 writes (A acknowledged the others)" \
  test "$(stat_field writes)" -lt 2048
check "$dev removed" test ! -e "$dev"
finish
