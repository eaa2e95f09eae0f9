#!/usr/bin/env bash
# backup_cycle.sh AGENT CBTCTL — in the VM. Scenario 2: a full backup cycle through the gRPC
# API. Snapshot 1 (full backup reads its image), then writes to the origin: the image still
# returns the old bytes and the origin the new ones; release; snapshot 2: the changed extents
# since snapshot 1 are exactly the written ranges (rounded to CBT blocks), with their byte count;
# then more writes, snapshot 3: the extents since snapshot 2 show only those.
source "$(dirname "$0")/lib.sh"

size=$((64 << 20))
start_tracked $size
bs=$(ctlj cbt info "$origin" | jfield '.block_size')
pattern "$scratch/old" $((8 << 20))
seq -f 'NEW-DATA-%016g' 0 $(((1 << 20) / 21 + 1)) | head -c $((1 << 20)) > "$scratch/new"
write_at "$proxy" 0 $((8 << 20)) "$scratch/old"
write_at "$proxy" $((32 << 20)) $((8 << 20)) "$scratch/old"
before=$(sum_of "$proxy" 0 $size)

# Full backup.
id1=$(snapshot_create 64M "$diff_dir" "$origin")
check "snapshot 1 ($id1)" test -n "$id1"
read -r gen1 k1 <<< "$(cbt_info "$origin")"
image=$(image_of "$id1" "$origin")
check "image of snapshot 1 is a block device ($image)" test -b "$image"
expect_eq "tracker reports the image" "$image" "$(ctlj tracker "$origin" | jfield '.image_path')"
expect_eq "full backup: image equals the origin at the take" "$before" "$(sum_of "$image" 0 $size)"

# Writes after the take: first write to a chunk copies it (copy-on-write).
writes=("$((4 << 20)) 65536" "$((20 << 20)) 4096" "$(((40 << 20) + (128 << 10))) 262144"
        "$((size - 8192)) 8192")
old_sums=()
for w in "${writes[@]}"; do
  read -r off len <<< "$w"
  old_sums+=("$(sum_of "$proxy" "$off" "$len")")
  write_at "$proxy" "$off" "$len" "$scratch/new" || fail "write $len at $off"
done
i=0
for w in "${writes[@]}"; do
  read -r off len <<< "$w"
  expect_eq "image keeps the old bytes at $off+$len" "${old_sums[$i]}" "$(sum_of "$image" "$off" "$len")"
  expect_eq "origin has the new bytes at $off+$len" \
    "$(head -c "$len" "$scratch/new" | md5sum | cut -d' ' -f1)" "$(sum_of "$origin" "$off" "$len")"
  i=$((i + 1))
done
expect_eq "whole image still equals the origin at the take" "$before" "$(sum_of "$image" 0 $size)"
used=$(ctlj snapshot get "$id1" | jfield '.diff_storage_used_bytes // "0"')
check "diff storage holds the preserved chunks ($used bytes)" test "$used" -gt 0
check "release snapshot 1" ctl snapshot release "$id1"
nap 0.5
check "image is gone after release" bash -c "! test -e '$image'"

# Incremental: snapshot 2, extents since snapshot 1.
id2=$(snapshot_create 64M "$diff_dir" "$origin")
check "snapshot 2 ($id2)" test -n "$id2"
got=$(extents "$origin" "$gen1" "$k1")
expect_eq "changed extents since snapshot 1 = the written ranges" "$(block_extents "$bs" "${writes[@]}")" "$got"
total=$(ctlj cbt extents "$origin" --base-generation "$gen1" --base-changes "$k1" | jq -s -r 'last.changed_bytes')
want_total=$(block_extents "$bs" "${writes[@]}" | awk '{ s += $2 } END { print s }')
expect_eq "changed byte count" "$want_total" "$total"
read -r gen2 k2 <<< "$(cbt_info "$origin")"
expect_eq "same generation across snapshots" "$gen1" "$gen2"
expect_eq "changes number advanced by one" "$((k1 + 1))" "$k2"
image2=$(image_of "$id2" "$origin")
expect_eq "image 2 equals the origin now" "$(sum_of "$proxy" 0 $size)" "$(sum_of "$image2" 0 $size)"
check "release snapshot 2" ctl snapshot release "$id2"

# Only new writes show up in the next incremental.
more=("$((50 << 20)) 4096")
write_at "$proxy" $((50 << 20)) 4096 "$scratch/new"
id3=$(snapshot_create 64M "$diff_dir" "$origin")
expect_eq "extents since snapshot 2 show only the new write" "$(block_extents "$bs" "${more[@]}")" \
  "$(extents "$origin" "$gen2" "$k2")"
check "release snapshot 3" ctl snapshot release "$id3"
expect_eq "no snapshot left" "0" "$(ctlj snapshots | jq '.snapshots | length')"
check "detach" ctl detach "$origin"
expect_clean_stop
finish
