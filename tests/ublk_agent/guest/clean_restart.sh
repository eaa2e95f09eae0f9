#!/usr/bin/env bash
# clean_restart.sh AGENT CBTCTL — in the VM. Scenario 6: writes, a snapshot (backup base: CBT
# generation G, changes number K), release, more writes; then the agent stops with SIGTERM. The
# proxy stays (handed over) with its CBT map saved in the state directory; a write issued while
# no agent runs waits. The next agent takes the proxy and the map back (the saved file is
# consumed): same generation G and number K, same map; the waiting write completes; and the
# next incremental (extents since (G, K)) is exactly the writes made before the stop plus the
# one made while stopped. Data intact throughout.
source "$(dirname "$0")/lib.sh"

size=$((32 << 20))
start_tracked $size
bs=$(ctlj cbt info "$origin" | jfield '.block_size')
read -r major minor <<< "$(stat -L -c '%t %T' "$origin")"
saved_map=$state_dir/cbt-map-$((16#$major))-$((16#$minor)).binpb

truncate -s $size "$scratch/expected"
put() { mirror_write "$proxy" "$scratch/expected" "$@"; }
pattern "$scratch/old" $((2 << 20))
seq -f 'NEW-DATA-%016g' 0 $(((256 << 10) / 21 + 1)) | head -c $((256 << 10)) > "$scratch/new"

put 0 $((2 << 20)) "$scratch/old" || fail "first writes"
put $((8 << 20)) $((256 << 10)) "$scratch/old" || fail "first writes"
id=$(snapshot_create 32M "$diff_dir" "$origin")
check "snapshot: the backup base ($id)" test -n "$id"
check "release it" ctl snapshot release "$id"
read -r gen k <<< "$(cbt_info "$origin")"

# Writes after the base: the next incremental must report exactly these.
writes=("$(((4 << 20) + 4096)) 8192" "$((12 << 20)) 65536" "$(((16 << 20) - 4096)) 8192"
        "$((size - 65536)) 65536")
for w in "${writes[@]}"; do
  read -r off len <<< "$w"
  put "$off" "$len" "$scratch/new" || fail "write $len at $off"
done
cbt_map_file "$origin" "$scratch/map.before"
want=$(md5sum < "$scratch/expected" | cut -d' ' -f1)
expect_eq "proxy holds everything written" "$want" "$(sum_of "$proxy" 0 $size)"

expect_clean_stop "agent stops cleanly (SIGTERM)"
check "agent log: the proxy is left for the next agent" grep -q "$proxy left for the next agent" "$agent_log"
check "the proxy stays ($proxy)" test -b "$proxy"
check "the CBT map is saved ($saved_map)" test -s "$saved_map"

# A write while no agent runs: held by the kernel until the next agent serves the proxy.
while_stopped="$((20 << 20)) 65536"
dd if="$scratch/new" of="$scratch/expected" bs=65536 seek=$(((20 << 20) / 65536)) count=1 \
  conv=notrunc status=none
dd if="$scratch/new" of="$proxy" bs=65536 seek=$(((20 << 20) / 65536)) count=1 oflag=direct \
  conv=notrunc status=none 2> "$scratch/dd.err" &
dd_pid=$!
cleanup_hooks+=("kill -KILL $dd_pid 2>/dev/null")
nap 1.5
check "a write while stopped waits" kill -0 "$dd_pid"

if ! start_agent agent2; then fail "agent starts again"; finish; fi
ok "agent starts again with the same state directory"
check "agent log: $origin recovered as $proxy with generation $gen, changes number $k" \
  grep -q "recovered $origin as $proxy (CBT generation $gen, changes number $k)" "$agent_log"
if wait_pid "$dd_pid" 30 && wait "$dd_pid"; then
  ok "the waiting write completes"
else
  fail "the waiting write completes" "$(cat "$scratch/dd.err")"
fi
expect_eq "same generation and changes number" "$gen $k" "$(cbt_info "$origin")"
check "the saved map file is consumed" bash -c "! test -e '$saved_map'"
cbt_map_file "$origin" "$scratch/map.after"
check "the CBT map is the same as before the stop" cmp "$scratch/map.before" "$scratch/map.after"
want=$(md5sum < "$scratch/expected" | cut -d' ' -f1)
expect_eq "data intact (proxy)" "$want" "$(sum_of "$proxy" 0 $size)"
expect_eq "data intact (origin)" "$want" "$(sum_of "$origin" 0 $size)"

id2=$(snapshot_create 32M "$diff_dir" "$origin")
check "next snapshot ($id2)" test -n "$id2"
expect_eq "incremental since (G, K) = the writes before the stop + the one while stopped" \
  "$(block_extents "$bs" "${writes[@]}" "$while_stopped" | lines)" \
  "$(extents "$origin" "$gen" "$k" | lines)"
expect_eq "changes number advanced by one" "$gen $((k + 1))" "$(cbt_info "$origin")"
expect_eq "its image equals the origin" "$want" "$(sum_of "$(image_of "$id2" "$origin")" 0 $size)"
check "release it" ctl snapshot release "$id2"
check "detach" ctl detach "$origin"
expect_clean_stop
finish
