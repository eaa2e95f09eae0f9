#!/usr/bin/env bash
# fio_verify.sh AGENT CBTCTL — in the VM. Scenario 3: fio --verify=crc32c (io_uring, O_DIRECT,
# random writes of mixed sizes, so chunk-straddling ones too) on the tracked proxy while a
# snapshot is held: every block verifies although each first write to a chunk is copied on
# write first, and the image still shows the data of the take. Then fio write+verify on the
# image itself (writable: the writes go to the diff storage only): it verifies, and the origin
# does not change. After the release, a write-then-verify pass on the proxy, verified once more
# on the origin loop device behind it.
source "$(dirname "$0")/lib.sh"

size=$((32 << 20))
start_tracked $size

# Region A (proxy fio under the snapshot) and region B (image fio) hold a pattern at the take.
a_off=0 b_off=$((16 << 20)) region=$((8 << 20))
pattern "$scratch/old" $region
write_at "$proxy" $a_off $region "$scratch/old" || fail "pattern into region A"
write_at "$proxy" $b_off $region "$scratch/old" || fail "pattern into region B"
old=$(md5sum < "$scratch/old" | cut -d' ' -f1)
expect_eq "region A holds the pattern" "$old" "$(sum_of "$proxy" $a_off $region)"

id=$(snapshot_create 32M "$diff_dir" "$origin")
check "snapshot ($id)" test -n "$id"
image=$(image_of "$id" "$origin")
check "image is a block device ($image)" test -b "$image"

# Random 4-64 KiB writes over region A: 32 chunks of 256 KiB, each preserved on its first write.
proxy_job=(--filename="$proxy" --offset=$a_off --size=$region --rw=randwrite --bsrange=4k-64k
           --iodepth=16)
expect_fio "fio randwrite + crc32c verify on the proxy under the snapshot (written, verified)" \
  "$region $region" proxy "${proxy_job[@]}"
expect_eq "image keeps region A as it was at the take" "$old" "$(sum_of "$image" $a_off $region)"
used=$(ctlj snapshot get "$id" | jfield '.diff_storage_used_bytes // "0"')
expect_eq "every chunk of region A preserved once (diff storage used)" "$region" "$used"

# The image is writable: fio writes and verifies region B of it.
image_job=(--filename="$image" --offset=$b_off --size=$region --rw=randwrite --bsrange=4k-64k
           --iodepth=16)
expect_fio "fio randwrite + crc32c verify on the image (written, verified)" \
  "$region $region" image "${image_job[@]}"
expect_eq "image writes never reach the origin (region B on the proxy)" "$old" \
  "$(sum_of "$proxy" $b_off $region)"
expect_eq "... nor on the loop device" "$old" "$(sum_of "$origin" $b_off $region)"
expect_fio "image region B verifies again (verify_only: verified)" \
  "$region" image_again "${image_job[@]}" --verify_only
expect_fio "proxy region A still verifies (verify_only: verified)" \
  "$region" proxy_again "${proxy_job[@]}" --verify_only
expect_eq "snapshot not corrupted" "SNAPSHOT_STATE_ACTIVE" "$(ctlj snapshot get "$id" | jfield '.state')"
check "release" ctl snapshot release "$id"

# Without a snapshot: sequential write then verify over both regions, through the proxy.
after_job=(--offset=0 --size=$((24 << 20)) --rw=write --bs=128k --iodepth=8)
expect_fio "after release: fio write + verify on the proxy (written, verified)" \
  "$((24 << 20)) $((24 << 20))" after --filename="$proxy" "${after_job[@]}"
expect_fio "the origin loop device verifies too (verify_only: verified)" \
  "$((24 << 20))" after_origin --filename="$origin" "${after_job[@]}" --verify_only
check "detach" ctl detach "$origin"
expect_clean_stop
finish
