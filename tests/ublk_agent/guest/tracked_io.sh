#!/usr/bin/env bash
# tracked_io.sh AGENT CBTCTL — in the VM. Scenario 1: a loop device attached with the ublk
# backend is served as /dev/ublkbN; a known pattern written at known offsets through it reads
# back (through the proxy and on the origin) and CBT marks exactly those blocks, discards
# included. The origin is claimed: it cannot be formatted or mounted behind the proxy's back.
source "$(dirname "$0")/lib.sh"

origin=$(make_loop origin 64M) || { fail "loop device"; finish; }
if ! start_agent agent; then fail "agent (--backend ublk) starts"; finish; fi
ok "agent (--backend ublk) starts"
check "capabilities name the ublk backend" bash -c "'$CBTCTL' --address unix:$sock --json capabilities | grep -q '\"ublk\"'"

proxy=$(attach "$origin")
check "attach $origin serves it as a ublk proxy ($proxy)" bash -c "[[ '$proxy' == /dev/ublkb* ]] && test -b '$proxy'"
expect_eq "proxy has the origin's size" "$(blockdev --getsize64 "$origin")" "$(blockdev --getsize64 "$proxy")"
expect_eq "proxy has the origin's logical block size" "$(blockdev --getss "$origin")" "$(blockdev --getss "$proxy")"
expect_eq "attach again is idempotent (same proxy)" "$proxy" "$(attach "$origin")"
check "origin is claimed: mkfs on it fails (in use)" bash -c "! mkfs.ext4 -q '$origin' 2>/dev/null"
expect_eq "tracker lists the proxy as io_path" "$proxy" "$(ctlj tracker "$origin" | jfield '.io_path')"

bs=$(ctlj cbt info "$origin" | jfield '.block_size')
check "CBT block size is a power of two >= 4096 ($bs)" bash -c "(( $bs >= 4096 && ($bs & ($bs - 1)) == 0 ))"

pattern "$scratch/pattern" $((1 << 20))
# offset length (bytes): first block, inside, a range over a block boundary, the last 4 KiB.
writes=("0 4096" "$((1 << 20)) 8192" "$((10 << 20)) 262144" "$((bs * 5 - 4096)) 8192"
        "$(((64 << 20) - 4096)) 4096")
want=()
for w in "${writes[@]}"; do
  read -r off len <<< "$w"
  write_at "$proxy" "$off" "$len" "$scratch/pattern" || fail "write $len bytes at $off"
  first=$((off / bs)) last=$(((off + len - 1) / bs))
  for ((b = first; b <= last; b++)); do want+=("$b"); done
done
sync
# The expected marked blocks, collapsed to ranges like marked_blocks prints them.
want_ranges=$(printf '%s\n' "${want[@]}" | sort -n -u | awk '
  function flush() { if (first != "") { printf "%s%s", sep, (first == last ? first : first "-" last); sep = " " } }
  { if (first != "" && $1 == last + 1) { last = $1 } else { flush(); first = last = $1 } }
  END { flush() }')

for w in "${writes[@]}"; do
  read -r off len <<< "$w"
  expect_eq "read back $len bytes at $off through the proxy" \
    "$(head -c "$len" "$scratch/pattern" | md5sum | cut -d' ' -f1)" "$(sum_of "$proxy" "$off" "$len")"
  expect_eq "the origin holds them too" \
    "$(head -c "$len" "$scratch/pattern" | md5sum | cut -d' ' -f1)" "$(sum_of "$origin" "$off" "$len")"
done

# The map is the read map: what changed up to the last take. Take one to see the writes.
id=$(snapshot_create 16M "$diff_dir" "$origin")
check "snapshot to publish the writes in the read map ($id)" test -n "$id"
check "release it" ctl snapshot release "$id"
cbt_map_file "$origin" "$scratch/map1"
expect_eq "CBT marks exactly the written blocks" "$want_ranges" "$(marked_blocks "$scratch/map1")"

# DISCARD and WRITE_ZEROES through the proxy change content: they are marked like writes.
blkdiscard -o $((32 << 20)) -l $((bs * 2)) "$proxy" 2> "$scratch/discard.err" || fail "blkdiscard" "$(cat "$scratch/discard.err")"
blkdiscard -z -o $((48 << 20)) -l "$bs" "$proxy" 2> "$scratch/zero.err" || fail "blkdiscard -z" "$(cat "$scratch/zero.err")"
id=$(snapshot_create 16M "$diff_dir" "$origin")
check "release the second snapshot" ctl snapshot release "$id"
info=($(cbt_info "$origin"))
base=$((info[1] - 1))
got=$(extents "$origin" "${info[0]}" "$base" | tr '\n' ' ')
expect_eq "discard and write-zeroes marked (extents since the first snapshot)" \
  "$((32 << 20)) $((bs * 2)) $((48 << 20)) $bs " "$got"
expect_eq "zeroed range reads zeroes" "$(head -c "$bs" /dev/zero | md5sum | cut -d' ' -f1)" \
  "$(sum_of "$proxy" $((48 << 20)) "$bs")"

check "detach" ctl detach "$origin"
nap 0.5
check "proxy is gone after detach" bash -c "! test -e '$proxy'"
check "origin is free again: mkfs works" mkfs.ext4 -q "$origin"
expect_clean_stop
finish
