#!/usr/bin/env bash
# image_write.sh AGENT CBTCTL — in the VM. Scenario 7: writes into a snapshot image (writable; the
# data goes to the diff storage only) at the image's own granularity — it has the origin's
# 512-byte logical blocks, so dd bs=512 oflag=direct at odd sectors, not 4 KiB aligned — and
# across 256 KiB chunk boundaries, into chunks not yet preserved and into one an origin write
# preserved first. They read back from the image (and nothing around them changes), the origin
# (proxy and loop device) never sees them, and CBT marks them in both maps as blksnap's
# set_both does: at once in the map being read (extents since the previous base), and in the
# next snapshot's incremental, together with the origin's own writes.
source "$(dirname "$0")/lib.sh"

size=$((32 << 20)) chunk=$((256 << 10))
start_tracked $size
bs=$(ctlj cbt info "$origin" | jfield '.block_size')

truncate -s $size "$scratch/expected"
put() { mirror_write "$proxy" "$scratch/expected" "$@"; }
pattern "$scratch/old" $((4 << 20))
seq -f 'NEW-DATA-%016g' 0 $(((64 << 10) / 21 + 1)) | head -c $((64 << 10)) > "$scratch/new"
seq -f 'image-write-%09g' 0 $(((256 << 10) / 21 + 1)) | head -c $((256 << 10)) > "$scratch/img"
put 0 $((4 << 20)) "$scratch/old" || fail "pattern into the first 4 MiB"

id0=$(snapshot_create 32M "$diff_dir" "$origin")
check "snapshot 0: the previous backup base ($id0)" test -n "$id0"
check "release it" ctl snapshot release "$id0"
read -r gen k0 <<< "$(cbt_info "$origin")"
id1=$(snapshot_create 32M "$diff_dir" "$origin")
check "snapshot 1 ($id1)" test -n "$id1"
read -r gen1 k1 <<< "$(cbt_info "$origin")"
image=$(image_of "$id1" "$origin")
check "image is a block device ($image)" test -b "$image"
expect_eq "image has the origin's 512-byte logical blocks" 512 "$(blockdev --getss "$image")"
cp "$scratch/expected" "$scratch/image.expected"  # the image shows the origin at the take

# The origin's own write after the take: chunk 3 is preserved before it lands. (Its CBT block
# is not one an image write marks, so the two maps tell them apart.)
origin_write="$((3 * chunk + 131072)) 65536"
put $origin_write "$scratch/new" || fail "origin write into chunk 3"

# "sector count" of each image write (from the img file at byte 512 * sector % 64 KiB):
#   odd sectors inside chunk 0 (not preserved yet), 3 + 4 sectors across the chunk 1/2
#   boundary, 9 sectors at an odd sector of chunk 3 (preserved by the origin write), 65 KiB
#   across the chunk 31/32 boundary (zeroes at the take), the last 3 sectors of the device.
image_writes=("1 3" "$((2 * chunk / 512 - 3)) 7" "$((3 * chunk / 512 + 21)) 9"
              "$((32 * chunk / 512 - 5)) 130" "$((size / 512 - 3)) 3")
ranges=()
for w in "${image_writes[@]}"; do
  read -r sector count <<< "$w"
  skip=$((sector % 128))
  if dd if="$scratch/img" of="$image" bs=512 seek="$sector" skip=$skip count="$count" \
      oflag=direct conv=notrunc status=none 2> "$scratch/dd.err"; then
    dd if="$scratch/img" of="$scratch/image.expected" bs=512 seek="$sector" skip=$skip \
      count="$count" conv=notrunc status=none
    ok "image write: $count sectors at sector $sector"
  else
    fail "image write: $count sectors at sector $sector" "$(cat "$scratch/dd.err")"
  fi
  ranges+=("$((sector * 512)) $((count * 512))")
done
for r in "${ranges[@]}"; do
  read -r off len <<< "$r"
  expect_eq "image reads back $len bytes at $off (512-byte reads)" \
    "$(sum_file "$scratch/image.expected" "$off" "$len")" "$(sum_of "$image" "$off" "$len")"
done
expect_eq "whole image = the take + the image writes (nothing around them changed)" \
  "$(md5sum < "$scratch/image.expected" | cut -d' ' -f1)" "$(sum_of "$image" 0 $size)"
want=$(md5sum < "$scratch/expected" | cut -d' ' -f1)
expect_eq "origin untouched by the image writes (proxy)" "$want" "$(sum_of "$proxy" 0 $size)"
expect_eq "origin untouched by the image writes (loop device)" "$want" "$(sum_of "$origin" 0 $size)"
expect_eq "snapshot not corrupted" "SNAPSHOT_STATE_ACTIVE" "$(ctlj snapshot get "$id1" | jfield '.state')"

# set_both: the read map (snapshot 1's) has them now; the origin write shows only next time.
expect_eq "CBT now: extents since snapshot 0 = the image writes" \
  "$(block_extents "$bs" "${ranges[@]}" | lines)" "$(extents "$origin" "$gen" "$k0" | lines)"
check "release snapshot 1" ctl snapshot release "$id1"
id2=$(snapshot_create 32M "$diff_dir" "$origin")
check "snapshot 2 ($id2)" test -n "$id2"
expect_eq "CBT next: extents since snapshot 1 = the image writes + the origin write" \
  "$(block_extents "$bs" "${ranges[@]}" "$origin_write" | lines)" \
  "$(extents "$origin" "$gen1" "$k1" | lines)"
expect_eq "image 2 shows the origin (not the old image writes)" "$want" \
  "$(sum_of "$(image_of "$id2" "$origin")" 0 $size)"
check "release snapshot 2" ctl snapshot release "$id2"
check "detach" ctl detach "$origin"
expect_clean_stop
finish
