#!/usr/bin/env bash
# discard.sh PATH/TO/ublk-serve — in the VM. The device advertises discard and write-zeroes
# (from the backing file: hole punching works on tmpfs); blkdiscard (DISCARD), blkdiscard -z
# (WRITE_ZEROES with NOUNMAP) and fallocate --punch-hole on the device (WRITE_ZEROES, unmap
# allowed) are served: those ranges read back as zeros through the device and in the backing
# file, the neighbours keep their data, the backing file's allocation shrinks, ublk-serve counted
# the requests, and the CBT map marks exactly those blocks (the data was put in the backing file
# before the device existed, so only the three operations can have marked anything).
source "$(dirname "$0")/lib.sh"

backing=$scratch/backing.img
head -c 8M /dev/zero | tr '\0' 'D' > "$backing"
truncate -s 64M "$backing"
if ! start_server discard --backing "$backing" --cbt-out "$scratch/cbt.map"; then
  fail "ublk-serve ready"
  finish
fi
ok "ublk-serve ready ($DEV)"
q=/sys/block/${DEV#/dev/}/queue
check "discard advertised (discard_max_bytes > 0)" test "$(cat $q/discard_max_bytes)" -gt 0
check "write-zeroes advertised (write_zeroes_max_bytes > 0)" test "$(cat $q/write_zeroes_max_bytes)" -gt 0
expect_eq "discard_granularity (tmpfs block size)" 4096 "$(cat $q/discard_granularity)"

allocated_before=$(stat -c %b "$backing")
check "blkdiscard 1 MiB at 1 MiB" blkdiscard -o 1M -l 1M "$DEV"
check "blkdiscard -z 512 KiB at 4 MiB (BLKZEROOUT)" blkdiscard -z -o 4M -l 512K "$DEV"
check "fallocate --punch-hole 256 KiB at 6 MiB" fallocate --punch-hole -o 6M -l 256K "$DEV"

# expect SOURCE FLAGS OFFSET LENGTH CHAR: that range of SOURCE holds only CHAR ("0" = zeros).
expect_range() {
  local src=$1 flags=$2 off=$3 len=$4 want=$5
  if [ "$want" = 0 ]; then
    cmp <(dd if="$src" bs=64k iflag="$flags"skip_bytes,count_bytes skip="$off" count="$len" status=none) \
        <(head -c "$len" /dev/zero)
  else
    cmp <(dd if="$src" bs=64k iflag="$flags"skip_bytes,count_bytes skip="$off" count="$len" status=none) \
        <(head -c "$len" /dev/zero | tr '\0' "$want")
  fi
}
layout=(
  "0 1048576 D"             # untouched
  "1048576 1048576 0"       # discarded
  "2097152 2097152 D"
  "4194304 524288 0"        # zeroed (NOUNMAP)
  "4718592 1572864 D"
  "6291456 262144 0"        # punched (WRITE_ZEROES without NOUNMAP)
  "6553600 1835008 D"
)
check_layout() {
  local src=$1 flags=$2 entry off len want
  for entry in "${layout[@]}"; do
    read -r off len want <<< "$entry"
    expect_range "$src" "$flags" "$off" "$len" "$want" || { echo "range $off+$len is not '$want'"; return 1; }
  done
}
check "device: the three ranges read zeros, the rest keeps its data" check_layout "$DEV" direct,
check "backing file: the same" check_layout "$backing" ""
allocated_after=$(stat -c %b "$backing")
check "backing allocation shrank ($allocated_before -> $allocated_after blocks)" \
  test "$allocated_after" -lt "$allocated_before"

check_stop "SIGTERM: STOP_DEV + DEL_DEV, exit 0"
grep '^STATS' "$server_log" | sed 's/^/     /'
check "DISCARD served" test "$(stat_field discards)" -ge 1
check "WRITE_ZEROES served (both kinds)" test "$(stat_field write_zeroes)" -ge 2
expect_eq "no WRITE requests" 0 "$(stat_field writes)"
expect_eq "request errors" 0 "$(stat_field errors)"
expected="16-31 64-71 96-99"
expect_eq "CBT marks exactly the discarded/zeroed blocks" "$expected" "$(marked_blocks "$scratch/cbt.map")"
finish
