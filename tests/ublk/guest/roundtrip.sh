#!/usr/bin/env bash
# roundtrip.sh PATH/TO/ublk-serve — in the VM. ublk-serve over a 64 MiB file in /tmp with
# --cbt-out: patterned O_DIRECT writes at known offsets (512 B .. 1 MiB, across 64 KiB block
# boundaries, the last block) read back equal through the device and land in the backing file at
# the same offsets; the whole device equals the backing file; after SIGTERM (STOP_DEV + DEL_DEV)
# the nodes are gone and the CBT map marks exactly the written 64 KiB blocks. Also: while
# ublk-serve holds its queue quiesced (SIGUSR2, 3 s) a 4 KiB write waits and completes only
# after the resume (it takes >= 1.5 s where the same write otherwise takes well under 1 s).
source "$(dirname "$0")/lib.sh"

backing=$scratch/backing.img
truncate -s 64M "$backing"
pattern "$scratch/pattern" $((2 << 20))

if ! start_server roundtrip --backing "$backing" --cbt-out "$scratch/cbt.map" --hold-ms 3000; then
  fail "ublk-serve ready"
  finish
fi
ok "ublk-serve ready ($DEV)"
check "$DEV is a block device" test -b "$DEV"
expect_eq "capacity" $((64 << 20)) "$(blockdev --getsize64 "$DEV")"

# offset length pattern-offset: aligned to 512 (the logical block), some across 64 KiB blocks.
writes=(
  "0 4096 0"
  "192512 8192 4096"          # 188 KiB: the end of block 2 and the start of block 3
  "5243392 512 12288"         # 5 MiB + 512: one sector in block 80
  "33554432 1048576 65536"    # 32 MiB: blocks 512..527
  "67104768 4096 1114112"     # the last 4 KiB: block 1023
)
expected_blocks="0 2-3 80 512-527 768 1023"  # 768: the write during the hold

write_all() {
  local w off len pof
  for w in "${writes[@]}"; do
    read -r off len pof <<< "$w"
    dd if="$scratch/pattern" of="$DEV" bs="$len" count=1 iflag=skip_bytes skip="$pof" \
      oflag=direct,seek_bytes seek="$off" conv=notrunc status=none || return 1
  done
}
# compare SOURCE FLAGS: every written range of SOURCE equals its pattern slice.
compare() {
  local src=$1 flags=$2 w off len pof
  for w in "${writes[@]}"; do
    read -r off len pof <<< "$w"
    cmp <(dd if="$src" bs="$len" count=1 iflag="$flags"skip_bytes skip="$off" status=none) \
        <(dd if="$scratch/pattern" bs="$len" count=1 iflag=skip_bytes skip="$pof" status=none) ||
      { echo "mismatch at $off+$len"; return 1; }
  done
}
check "patterned O_DIRECT writes (${#writes[@]} ranges)" write_all
check "read back through $DEV (O_DIRECT)" compare "$DEV" direct,
check "unwritten range reads zeros" \
  cmp <(dd if="$DEV" bs=64k count=1 skip=1 iflag=direct status=none) <(head -c 65536 /dev/zero)
check "the backing file holds the writes at the same offsets" compare "$backing" ""
check "whole device equals the backing file" \
  cmp <(dd if="$DEV" bs=1M iflag=direct status=none) "$backing"

# elapsed_dd OFFSET: a 4 KiB O_DIRECT write at OFFSET; prints its duration in ms.
elapsed_dd() {
  local start now
  usec; start=$now
  dd if="$scratch/pattern" of="$DEV" bs=4096 count=1 iflag=skip_bytes skip=8192 \
    oflag=direct,seek_bytes seek="$1" conv=notrunc status=none || return 1
  usec; echo $(((now - start) / 1000))
}
held_write() {
  local base held i
  base=$(elapsed_dd $((48 << 20))) || return 1
  kill -USR2 "$server_pid"
  for ((i = 0; i < 200; i++)); do grep -q '^QUIESCED' "$server_log" && break; nap 0.05; done
  grep -q '^QUIESCED' "$server_log" || { echo "no QUIESCED from ublk-serve"; return 1; }
  held=$(elapsed_dd $((48 << 20))) || return 1
  for ((i = 0; i < 40; i++)); do grep -q '^RESUMED' "$server_log" && break; nap 0.05; done
  echo "write took ${base} ms normally, ${held} ms while held"
  grep -q '^RESUMED' "$server_log" || { echo "no RESUMED from ublk-serve"; return 1; }
  [ "$base" -lt 1000 ] && [ "$held" -ge 1500 ] && [ "$held" -gt $((base + 1000)) ]
}
if held_write > "$scratch/hold.log" 2>&1; then
  ok "quiesce holds a new write until resume ($(tail -n 1 "$scratch/hold.log"))"
else
  fail "quiesce holds a new write until resume" "$(cat "$scratch/hold.log")"
fi
check "the held write landed" \
  cmp <(dd if="$DEV" bs=4096 count=1 iflag=direct,skip_bytes skip=$((48 << 20)) status=none) \
      <(dd if="$scratch/pattern" bs=4096 count=1 iflag=skip_bytes skip=8192 status=none)

dev=$DEV id=$DEV_ID
check_stop "SIGTERM: STOP_DEV + DEL_DEV, exit 0"
grep '^STATS' "$server_log" | sed 's/^/     /'
check "$dev removed" test ! -e "$dev"
check "/dev/ublkc$id removed" test ! -e "/dev/ublkc$id"
# Five writes (the 1 MiB one arrives as two requests: max_io_buf_bytes is 512 KiB) + 2 at 48 MiB.
expect_eq "served write requests" 8 "$(stat_field writes)"
expect_eq "request errors" 0 "$(stat_field errors)"
expect_eq "CBT map size (64 KiB blocks)" 1024 "$(stat -c %s "$scratch/cbt.map")"
expect_eq "CBT marks exactly the written blocks" "$expected_blocks" "$(marked_blocks "$scratch/cbt.map")"
finish
