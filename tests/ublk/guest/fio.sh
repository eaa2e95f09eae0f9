#!/usr/bin/env bash
# fio.sh PATH/TO/ublk-serve — in the VM. fio with crc32c verification (io_uring engine, O_DIRECT)
# on /dev/ublkbN over a 64 MiB file, each job in its own region: 4 KiB random writes at QD32,
# 1 MiB sequential writes, O_SYNC (FUA) random writes with an fsync every 4 (FLUSH), and 4 KiB
# random writes at QD32 while ublk-serve takes 5 snapshots (quiesce all queues, switch the CBT
# map, resume). Asserts: every job verifies, FUA writes and flushes reached the target, every
# snapshot completed, no request failed, clean stop.
source "$(dirname "$0")/lib.sh"

backing=$scratch/backing.img
truncate -s 64M "$backing"
if ! start_server fio --backing "$backing" --cbt-out "$scratch/cbt.map"; then
  fail "ublk-serve ready"
  finish
fi
ok "ublk-serve ready ($DEV)"

# run_fio NAME OFFSET SIZE ARGS...: one verified fio job; prints its bandwidth line.
run_fio() {
  local name=$1 offset=$2 size=$3 out
  shift 3
  out=$(fio --name="$name" --filename="$DEV" --ioengine=io_uring --direct=1 \
    --offset="$offset" --size="$size" --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --group_reporting "$@" 2>&1)
  local rc=$?
  echo "$out" | grep -E '^ +(WRITE|READ):' | sed "s/^ */     $name /" >> "$scratch/fio-summary"
  [ $rc -eq 0 ] || { echo "$out" | tail -n 20; return 1; }
}
check "fio 4k randwrite QD32 + crc32c verify (4 MiB)" \
  run_fio rand4k 0 4M --rw=randwrite --bs=4k --iodepth=32
check "fio 1M sequential write QD4 + crc32c verify (8 MiB)" \
  run_fio seq1m 16M 8M --rw=write --bs=1M --iodepth=4
check "fio 16k randwrite O_SYNC (FUA) + fsync every 4 + verify (2 MiB)" \
  run_fio fua16k 40M 2M --rw=randwrite --bs=16k --iodepth=8 --sync=1 --fsync=4

# Snapshots under load: SIGUSR1 makes ublk-serve quiesce, switch the CBT map and resume.
snapshots_under_load() {
  local fio_pid i
  local before
  before=$(stat -c %b "$backing")
  run_fio snap4k 48M 4M --rw=randwrite --bs=4k --iodepth=32 --rate_iops=400 &
  fio_pid=$!
  wait_allocated "$backing" $((before + 400)) || return 1  # the job is writing
  for i in 1 2 3 4 5; do
    kill -USR1 "$server_pid" || return 1
    nap 0.2
  done
  kill -0 "$fio_pid" || { echo "fio ended before the snapshots were taken"; return 1; }
  wait "$fio_pid" || return 1
  for i in $(seq 1 100); do
    [ "$(grep -c '^SNAPSHOT' "$server_log")" -ge 5 ] && return 0
    nap 0.05
  done
  echo "only $(grep -c '^SNAPSHOT' "$server_log") snapshots reported"
  return 1
}
if snapshots_under_load > "$scratch/snap.log" 2>&1; then
  ok "5 snapshots (quiesce/switch/resume) under fio 4k QD32 + verify (4 MiB)"
else
  fail "5 snapshots under fio load" "$(tail -n 12 "$scratch/snap.log")"
fi
grep '^SNAPSHOT' "$server_log" | sed 's/^/     /'

cat "$scratch/fio-summary"
check_stop "SIGTERM: STOP_DEV + DEL_DEV, exit 0"
grep '^STATS' "$server_log" | sed 's/^/     /'
expect_eq "request errors" 0 "$(stat_field errors)"
check "FUA writes reached the target" test "$(stat_field fua)" -gt 0
check "flushes reached the target" test "$(stat_field flushes)" -gt 0
# Every job's region, and nothing else, is marked (64 KiB blocks).
expected="0-63 256-383 640-671 768-831"
expect_eq "CBT marks exactly the job regions" "$expected" "$(marked_blocks "$scratch/cbt.map")"
finish
