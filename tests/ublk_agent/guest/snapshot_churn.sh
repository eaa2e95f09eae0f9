#!/usr/bin/env bash
# snapshot_churn.sh AGENT CBTCTL — in the VM. Snapshots taken and released while writes are in
# flight: fio (random 4-256 KiB writes, crc32c verify, QD 16) runs pass after pass on the proxy
# while CreateSnapshot / ReleaseSnapshot cycle beside it. Each take quiesces the proxy with first
# writes to chunks waiting for their copy on the preparation threads, and each release stops
# copy-on-write under the same writes. Every fio pass must verify, every take and release must
# succeed, a region nobody writes must read the same from every image, and CBT must cover every
# block fio wrote since the first take.
source "$(dirname "$0")/lib.sh"

size=$((48 << 20))
region=$((16 << 20))     # fio writes [0, 16 MiB)
still_off=$((32 << 20))  # nobody writes [32, 40 MiB)
still_len=$((8 << 20))
cycles=8
start_tracked $size
pattern "$scratch/still" $still_len
write_at "$proxy" $still_off $still_len "$scratch/still" || fail "pattern into the still region"
still=$(md5sum < "$scratch/still" | cut -d' ' -f1)

# The base for the extents check: the first take switches CBT to a new changes number.
first=$(snapshot_create 64M "$diff_dir" "$origin")
check "first snapshot ($first)" test -n "$first"
read -r gen base <<< "$(cbt_info "$origin")"
check "release the first snapshot" ctl snapshot release "$first"

# fio passes in the background until $scratch/stop exists; each pass's result in passes.txt.
: > "$scratch/passes.txt"
(
  for ((pass = 1; pass <= 40; pass++)); do
    [ -e "$scratch/stop" ] && break
    if got=$(fio_job "pass$pass" --filename="$proxy" --offset=0 --size=$region --rw=randwrite \
               --bsrange=4k-256k --iodepth=16 --randseed=$pass); then
      echo "ok $pass $got" >> "$scratch/passes.txt"
    else
      echo "FAIL $pass $(echo "$got" | tr '\n' ' ')" >> "$scratch/passes.txt"
    fi
  done
) &
writer=$!
cleanup_hooks+=("touch $scratch/stop; wait $writer 2>/dev/null")

taken=0 released=0 images_ok=0 used_total=0
for ((c = 1; c <= cycles; c++)); do
  nap 0.3
  id=$(snapshot_create 64M "$diff_dir" "$origin")
  [ -n "$id" ] || { fail "cycle $c: CreateSnapshot under writes"; continue; }
  taken=$((taken + 1))
  image=$(image_of "$id" "$origin")
  [ "$(sum_of "$image" $still_off $still_len)" = "$still" ] && images_ok=$((images_ok + 1))
  nap 0.3
  used=$(ctlj snapshot get "$id" | jfield '.diff_storage_used_bytes // "0"')
  used_total=$((used_total + used))
  ctl snapshot release "$id" > /dev/null && released=$((released + 1))
done
touch "$scratch/stop"
wait "$writer"

expect_eq "snapshots taken under writes" "$cycles" "$taken"
expect_eq "snapshots released under writes" "$cycles" "$released"
expect_eq "every image shows the still region as written" "$cycles" "$images_ok"
check "chunks were copied on write during the cycles ($((used_total >> 20)) MiB in all)" \
  test "$used_total" -gt 0
npasses=$(wc -l < "$scratch/passes.txt")
check "fio ran during the cycles ($npasses passes)" test "$npasses" -ge 2
fails=$(grep -c '^FAIL' "$scratch/passes.txt" || true)
expect_eq "every fio pass wrote and verified (failed passes)" 0 "$fails"
[ "$fails" = 0 ] || fail "fio passes" "$(grep '^FAIL' "$scratch/passes.txt" | head -n 3 | lines)"
expect_fio "the last pass still verifies afterwards (verify_only: verified)" \
  "$region" final --filename="$proxy" --offset=0 --size=$region --rw=randwrite \
  --bsrange=4k-256k --iodepth=16 --randseed=$npasses --verify_only

# CBT: every block of the fio region changed since the first take (a randwrite pass covers it).
bs=$(ctlj cbt info "$origin" | jfield '.block_size')
covered=$(extents "$origin" "$gen" "$base" |
  awk -v end=$region '{ s = $1; e = $1 + $2; if (s < end) { if (e > end) e = end; n += e - s } }
                      END { print n + 0 }')
expect_eq "CBT: changed extents since the first take cover the fio region (bytes, block $bs)" \
  "$region" "$covered"
expect_eq "CBT: the still region is not in them" "" \
  "$(extents "$origin" "$gen" "$base" | awk -v s=$still_off -v e=$((still_off + still_len)) \
      '$1 < e && $1 + $2 > s')"

check "detach" ctl detach "$origin"
expect_clean_stop
finish
