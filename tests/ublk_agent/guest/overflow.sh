#!/usr/bin/env bash
# overflow.sh AGENT CBTCTL — in the VM. Scenario 4: a snapshot whose diff storage holds 4 chunks
# (limit 1 MiB, chunks of 256 KiB) while writes go to more distinct chunks than that. Up to the
# limit the image keeps the old bytes; the write that needs a fifth chunk corrupts the snapshot:
# `cbtctl watch` gets a corrupted event (device, errno 28 ENOSPC), `snapshot get` shows the
# device's error, image reads and writes fail with EIO — while the origin loses nothing (its
# checksum is exactly what was written, before and after the overflow) and keeps taking writes.
# The release works (released event), and the next snapshot is healthy.
source "$(dirname "$0")/lib.sh"

size=$((32 << 20)) chunk=$((256 << 10))
start_tracked $size

# put OFFSET LENGTH SOURCE: writes through the proxy and into the expected origin contents.
truncate -s $size "$scratch/expected"
put() { mirror_write "$proxy" "$scratch/expected" "$@"; }
pattern "$scratch/old" $((4 << 20))
seq -f 'NEW-DATA-%016g' 0 $(((64 << 10) / 21 + 1)) | head -c $((64 << 10)) > "$scratch/new"
put 0 $((4 << 20)) "$scratch/old" || fail "pattern into the first 4 MiB"

start_watch "$scratch/events"
# The watcher is subscribed once it reports a release (a release before that goes unseen).
for try in 1 2 3; do
  warm=$(snapshot_create 1M "$diff_dir" "$origin")
  ctl snapshot release "$warm" > /dev/null
  if out=$(wait_event "$scratch/events" ".snapshot_id == \"$warm\" and .released" 5); then break; fi
done
if [ "${out:0:1}" = "{" ]; then ok "watch is live (saw warm-up snapshot $try released)"; else fail "watch is live" "$out"; fi

id=$(snapshot_create 1M "$diff_dir" "$origin")
check "snapshot with a 1 MiB diff storage limit ($id)" test -n "$id"
image=$(image_of "$id" "$origin")
check "image is a block device ($image)" test -b "$image"

# 64 KiB into each of chunks 0-3 (4 KiB in): the storage is then full, but nothing overflowed.
for c in 0 1 2 3; do put $((c * chunk + 4096)) $((64 << 10)) "$scratch/new" || fail "write into chunk $c"; done
expect_eq "4 chunks preserved: diff storage full" "$((4 * chunk))" \
  "$(ctlj snapshot get "$id" | jfield '.diff_storage_used_bytes // "0"')"
expect_eq "image still shows the take (chunks 0-3)" "$(sum_file "$scratch/old" 0 $((4 * chunk)))" \
  "$(sum_of "$image" 0 $((4 * chunk)))"
expect_eq "snapshot still active" "SNAPSHOT_STATE_ACTIVE" "$(ctlj snapshot get "$id" | jfield '.state')"

# A fifth chunk does not fit: the write goes on, the snapshot is corrupted.
put $((5 * chunk)) $((64 << 10)) "$scratch/new" || fail "write into chunk 5 (overflow)"
if event=$(wait_event "$scratch/events" ".snapshot_id == \"$id\" and .corrupted"); then
  expect_eq "corrupted event: device and errno (ENOSPC)" "$origin 28" \
    "$(jq -r '"\(.corrupted.device) \(.corrupted.errno_value)"' <<< "$event")"
  read -r major minor <<< "$(stat -L -c '%t %T' "$origin")"
  expect_eq "corrupted event: major:minor of the origin" "$((16#$major)):$((16#$minor))" \
    "$(jq -r '"\(.corrupted.major):\(.corrupted.minor)"' <<< "$event")"
else
  fail "corrupted event arrives" "$event"
fi
got=$(ctlj snapshot get "$id" | jq -r '"\(.state) \(.devices[0].error_code)"')
expect_eq "snapshot get: corrupted, device error -ENOSPC" "SNAPSHOT_STATE_CORRUPTED -28" "$got"

# The image fails every request now: reads of preserved chunks and untouched ones, and writes.
for at in 0 $((20 << 20)); do
  if dd if="$image" of=/dev/null bs=4096 skip=$((at / 4096)) count=1 iflag=direct status=none \
      2> "$scratch/read.err"; then
    fail "image read at $at fails" "it succeeded"
  else
    check "image read at $at fails with EIO" grep -q "Input/output error" "$scratch/read.err"
  fi
done
if dd if="$scratch/new" of="$image" bs=4096 seek=$(((20 << 20) / 4096)) count=1 oflag=direct \
    conv=notrunc status=none 2> "$scratch/write.err"; then
  fail "image write fails" "it succeeded"
else
  check "image write fails with EIO" grep -q "Input/output error" "$scratch/write.err"
fi

# Nothing was lost on the origin, and it keeps working: more writes into new and full chunks.
expect_eq "origin holds exactly what was written" "$(md5sum < "$scratch/expected" | cut -d' ' -f1)" \
  "$(sum_of "$origin" 0 $size)"
put $((7 * chunk)) $((64 << 10)) "$scratch/new" || fail "write into chunk 7 after the overflow"
put $((24 << 20)) $((64 << 10)) "$scratch/new" || fail "write at 24 MiB after the overflow"
put 0 $((64 << 10)) "$scratch/new" || fail "write into chunk 0 again"
want=$(md5sum < "$scratch/expected" | cut -d' ' -f1)
expect_eq "writes after the overflow: proxy reads them" "$want" "$(sum_of "$proxy" 0 $size)"
expect_eq "writes after the overflow: the origin holds them" "$want" "$(sum_of "$origin" 0 $size)"

check "release the corrupted snapshot" ctl snapshot release "$id"
check "released event" wait_event "$scratch/events" ".snapshot_id == \"$id\" and .released"
check "image is gone" bash -c "! test -e '$image'"
kill -TERM "$watch_pid"
wait "$watch_pid"
expect_eq "watch ends cleanly on SIGTERM" 0 $?
expect_eq "exactly one corrupted event" 1 "$(jq -s '[.[] | select(.corrupted)] | length' "$scratch/events")"

id2=$(snapshot_create 32M "$diff_dir" "$origin")
check "next snapshot ($id2)" test -n "$id2"
expect_eq "next snapshot is healthy" "SNAPSHOT_STATE_ACTIVE" "$(ctlj snapshot get "$id2" | jfield '.state')"
expect_eq "its image equals the origin" "$want" "$(sum_of "$(image_of "$id2" "$origin")" 0 $size)"
check "release it" ctl snapshot release "$id2"
check "detach" ctl detach "$origin"
expect_clean_stop
finish
