#!/usr/bin/env bash
# multiqueue.sh PATH/TO/ublk-serve — in a 2-vCPU VM. A device with 2 queues (one thread each,
# one FileTarget shared by both): two fio jobs, one pinned to each CPU (4 KiB random writes, QD16,
# rate-limited, crc32c verify) in separate regions, while ublk-serve takes 3 snapshots that must
# quiesce both queues. Both jobs verify, every snapshot completes while the jobs still write, no
# request fails, clean stop, and the CBT map marks exactly the two regions.
source "$(dirname "$0")/lib.sh"

expect_eq "vCPUs" 2 "$(nproc)"
backing=$scratch/backing.img
truncate -s 64M "$backing"
if ! start_server mq --backing "$backing" --queues 2 --depth 32 --cbt-out "$scratch/cbt.map"; then
  fail "ublk-serve ready"
  finish
fi
ok "ublk-serve ready ($DEV)"
expect_eq "hardware queues" 2 "$(ls -d /sys/block/${DEV#/dev/}/mq/* | wc -l)"
check "2 queue threads" test "$(ls /proc/$server_pid/task | wc -l)" -ge 3

fio_jobs() {
  fio --ioengine=io_uring --direct=1 --filename="$DEV" --rw=randwrite --bs=4k --iodepth=16 \
    --size=2M --rate_iops=100 --verify=crc32c --verify_fatal=1 --do_verify=1 --cpus_allowed_policy=split \
    --name=q0 --offset=0 --cpus_allowed=0 --name=q1 --offset=32M --cpus_allowed=1 \
    > "$scratch/fio.log" 2>&1
}
under_load() {
  local fio_pid i
  fio_jobs &
  fio_pid=$!
  wait_allocated "$backing" 400 || return 1   # 50 writes arrived: the jobs are running
  for i in 1 2 3; do
    kill -USR1 "$server_pid" || return 1
    nap 0.2
  done
  kill -0 "$fio_pid" || { echo "fio ended before the snapshots were taken"; return 1; }
  wait "$fio_pid" || { tail -n 20 "$scratch/fio.log"; return 1; }
  for ((i = 0; i < 100; i++)); do
    [ "$(grep -c '^SNAPSHOT' "$server_log")" -ge 3 ] && return 0
    nap 0.05
  done
  echo "only $(grep -c '^SNAPSHOT' "$server_log") snapshots reported"
  return 1
}
check "2 fio jobs on 2 CPUs + verify, 3 snapshots across both queues" under_load
grep -E '^ +(WRITE|READ):' "$scratch/fio.log" | sed 's/^ */     /'
grep '^SNAPSHOT' "$server_log" | sed 's/^/     /'
check_stop "SIGTERM: STOP_DEV + DEL_DEV, exit 0"
grep '^STATS' "$server_log" | sed 's/^/     /'
expect_eq "request errors" 0 "$(stat_field errors)"
expect_eq "CBT marks exactly the two regions" "0-31 512-543" "$(marked_blocks "$scratch/cbt.map")"
finish
