#!/usr/bin/env bash
# fio-ratios.sh AGENT CBTCTL — in the VM (tests/vm/README.md); bench/ublk/run-in-vm.sh starts it.
#
# How much does serving a device through the ublk backend cost? The real daemon
# (cbt-agent --backend ublk) tracks a loop device over a tmpfs file, and fio runs on that loop
# device directly and on its tracked proxy /dev/ublkbN, interleaved (direct first in odd rounds,
# proxy first in even ones) so that both see the same machine load:
#   seq1m    1 MiB sequential writes, QD 8
#   randw4k  4 KiB random writes, QD 32
#   randr4k  4 KiB random reads, QD 32
# Then the first-write-after-snapshot cost on the proxy: 4 KiB random writes, QD 32, each to a
# different 256 KiB CoW chunk (a replayed fio iolog, so each chunk is hit exactly once):
#   nosnap   no snapshot held
#   fresh    right after CreateSnapshot: every write first copies its chunk to the diff storage
#   held     the same writes again while that snapshot is still held (chunks already preserved)
# and, with a 4 KiB random reader (QD 4, same region) running beside those writes, the reads
# the proxy serves while chunks are being copied:
#   fresh+reads  beside the first writes after a new CreateSnapshot
#   held+reads   beside the same writes (PASSES times) once that snapshot holds every chunk
# Each round creates and releases its own snapshots. Results: per-round figures, then medians
# over the rounds; the ratios are medians of the per-round ratios (each from paired runs).
# Method, results and their limits: docs/BENCHMARKS.md, "ublk backend".
#
# Environment (defaults): BENCH_ROUNDS (4: as many rounds with either device first), BENCH_RUNTIME (4 s per fio run, after
# BENCH_RAMP = 1 s), BENCH_SIZE (512M: backing file and fio region), BENCH_LOOP_DIO (off; "on"
# makes the loop device use direct I/O on its tmpfs file, "both" runs both configurations),
# BENCH_FRESH_IOS (1024 chunks = 256 MiB of diff storage per snapshot; the runs without chunk
# copies replay the same writes BENCH_PASSES = 8 times, to last long enough), BENCH_SNAPSHOT (1; 0
# skips the snapshot part), BENCH_WORKLOADS ("seq1m randw4k randr4k"; "" runs only the snapshot
# part), BENCH_READERS (1; 0 skips the reader runs), BENCH_JSON_DIR (keep
# every fio JSON output there).
source "$(dirname "$0")/../../tests/ublk_agent/guest/lib.sh"

rounds=${BENCH_ROUNDS:-4}
runtime=${BENCH_RUNTIME:-4}
ramp=${BENCH_RAMP:-1}
size=${BENCH_SIZE:-512M}
loop_dio=${BENCH_LOOP_DIO:-off}
fresh_ios=${BENCH_FRESH_IOS:-1024}
passes=${BENCH_PASSES:-8}
do_snapshot=${BENCH_SNAPSHOT:-1}
do_readers=${BENCH_READERS:-1}
json_dir=${BENCH_JSON_DIR:-}
chunk=$((256 << 10))  # the agent's CoW chunk (CowStore::kDefaultChunkSize)

case $loop_dio in
  off | on) configs=("$loop_dio") ;;
  both) configs=(off on) ;;
  *) echo "BENCH_LOOP_DIO must be off, on or both" >&2; exit 2 ;;
esac
[ -z "$json_dir" ] || mkdir -p "$json_dir" || exit 2

# ---- helpers ---------------------------------------------------------------------------------

# median: the median of the numbers on stdin (mean of the middle two for an even count).
median() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f\n", a / b; else print "nan" }'; }

# fio_json NAME DEV ARGS...: one fio job on DEV, JSON into $scratch/NAME.json (and BENCH_JSON_DIR).
fio_json() {
  local name=$1 dev=$2 out=$scratch/$1.json
  shift 2
  if ! fio --name="$name" --filename="$dev" --ioengine=io_uring --direct=1 \
      --output-format=json --output="$out" "$@" > "$scratch/fio.err" 2>&1; then
    echo "fio $name on $dev failed:" >&2
    tail -n 20 "$scratch/fio.err" "$out" >&2
    return 1
  fi
  [ -z "$json_dir" ] || cp "$out" "$json_dir/$name.json"
}

# metric NAME DIR: "IOPS MiB/s" of the job's read or write side.
metric() {
  jq -r --arg d "$2" '.jobs[0][$d] | "\(.iops) \(.bw_bytes / 1048576)"' "$scratch/$1.json"
}

# The main workloads: name, direction, fio arguments.
read -ra workloads <<< "${BENCH_WORKLOADS-seq1m randw4k randr4k}"
declare -A wl_dir=([seq1m]=write [randw4k]=write [randr4k]=read)
declare -A wl_args=(
  [seq1m]="--rw=write --bs=1M --iodepth=8"
  [randw4k]="--rw=randwrite --bs=4k --iodepth=32 --norandommap --randrepeat=0"
  [randr4k]="--rw=randread --bs=4k --iodepth=32 --norandommap --randrepeat=0"
)
declare -A wl_what=(
  [seq1m]="1 MiB seq write QD8"
  [randw4k]="4 KiB rand write QD32"
  [randr4k]="4 KiB rand read QD32"
)
# Targets for proxy/direct (ratio of the figure that matters: MiB/s for seq1m, IOPS otherwise).
declare -A wl_target=([seq1m]=0.9 [randw4k]=0.7 [randr4k]=0.7)

# run_timed NAME DEV WORKLOAD: prints "IOPS MiB/s".
run_timed() {
  local args
  read -ra args <<< "${wl_args[$3]}"
  fio_json "$1" "$2" "${args[@]}" --size="$size" --time_based --runtime="$runtime" \
    --ramp_time="$ramp" || return 1
  metric "$1" "${wl_dir[$3]}"
}

# make_iolog FILE DEV COUNT SEED PASSES: a fio v2 iolog of 4 KiB writes, one per chunk of the
# first COUNT chunks in a shuffled order (the offset inside each chunk varies too), PASSES times.
make_iolog() {
  {
    echo "fio version 2 iolog"
    echo "$2 add"
    echo "$2 open"
    seq 0 $(($3 - 1)) | awk -v seed="$4" -v passes="$5" -v chunk=$chunk -v dev="$2" '
      BEGIN { srand(seed) }
      { c[NR] = $1 }
      END {
        for (i = NR; i > 1; i--) { j = int(rand() * i) + 1; t = c[i]; c[i] = c[j]; c[j] = t }
        for (i = 1; i <= NR; i++) o[i] = c[i] * chunk + int(rand() * (chunk / 4096)) * 4096
        for (p = 0; p < passes; p++)
          for (i = 1; i <= NR; i++) printf "%s write %d 4096\n", dev, o[i]
      }'
    echo "$2 close"
  } > "$1"
}

# run_replay NAME DEV LOG: replays LOG on DEV at QD 32 as fast as it can; prints "IOPS MiB/s".
run_replay() {
  fio_json "$1" "$2" --read_iolog="$3" --replay_redirect="$2" --replay_no_stall=1 \
    --iodepth=32 || return 1
  metric "$1" write
}

# run_replay_with_reader NAME DEV LOG: replays LOG on DEV at QD 32 and, until that ends
# (exitall), runs 4 KiB random reads at QD 4 over the log's region; prints
# "write_IOPS read_IOPS read_mean_latency_us".
run_replay_with_reader() {
  local out=$scratch/$1.json
  if ! fio --output-format=json --output="$out" --ioengine=io_uring --direct=1 --exitall \
      --name=writes --filename="$2" --read_iolog="$3" --replay_redirect="$2" --replay_no_stall=1 \
      --iodepth=32 \
      --name=reads --filename="$2" --rw=randread --bs=4k --iodepth=4 --norandommap \
      --randrepeat=0 --size=$((fresh_ios * chunk)) --time_based --runtime=600 \
      > "$scratch/fio.err" 2>&1; then
    echo "fio $1 on $2 failed:" >&2
    tail -n 20 "$scratch/fio.err" "$out" >&2
    return 1
  fi
  [ -z "$json_dir" ] || cp "$out" "$json_dir/$1.json"
  jq -r '"\(.jobs[0].write.iops) \(.jobs[1].read.iops) \(.jobs[1].read.clat_ns.mean / 1000)"' "$out"
}

machine() {
  echo "guest: $(uname -r), $(nproc) vCPU ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%d MiB", $2 / 1024 }' /proc/meminfo) RAM"
  echo "load average in the guest: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "fio $(fio --version | sed 's/^fio-//'), rounds $rounds, ${ramp}+${runtime} s per timed run, region $size, snapshot writes $fresh_ios"
}

# ---- one configuration -----------------------------------------------------------------------

# bench_config DIO: loop device (direct I/O DIO) over a tmpfs file, tracked by the agent.
bench_config() {
  local dio=$1 file=$scratch/origin-$1.img loop proxy r wl first second dev name m a
  local -A res=()
  echo
  echo "=== loop device over a tmpfs file, loop direct I/O $dio ==="
  truncate -s "$size" "$file" && fallocate -l "$size" "$file" || { fail "backing file"; return 1; }
  loop=$(losetup -f --show --direct-io="$dio" "$file") || { fail "losetup --direct-io=$dio"; return 1; }
  loops+=("$loop")
  if [ "$(cat "/sys/block/${loop#/dev/}/loop/dio")" != "$([ "$dio" = on ] && echo 1 || echo 0)" ]; then
    fail "loop direct I/O $dio" "the kernel refused it"
    return 1
  fi
  proxy=$(attach "$loop")
  if ! [ -b "$proxy" ]; then fail "attach $loop" "got '$proxy'"; return 1; fi
  ok "$loop (dio $dio, $size) tracked as $proxy"
  local q
  for q in "$loop" "$proxy"; do
    q=/sys/block/${q#/dev/}/queue
    echo "     $q: max_sectors_kb $(cat "$q/max_sectors_kb"), nr_requests $(cat "$q/nr_requests"), scheduler $(cat "$q/scheduler")"
  done
  # Write the whole origin once (the proxy serves the same bytes), so that no measured run meets
  # a never-written page.
  fio_json "fill-$dio" "$loop" --rw=write --bs=1M --iodepth=8 --size="$size" > /dev/null ||
    { fail "prefill"; return 1; }

  # One short unrecorded pass of every workload on both devices, so that no measured run is the
  # first of its kind on its device.
  for wl in "${workloads[@]}"; do
    for dev in "$loop" "$proxy"; do
      read -ra a <<< "${wl_args[$wl]}"
      fio_json "$dio-warmup" "$dev" "${a[@]}" --size="$size" --time_based --runtime=1 ||
        { fail "warm-up $wl on $dev"; return 1; }
    done
  done

  for ((r = 1; r <= rounds; r++)); do
    for wl in "${workloads[@]}"; do
      if ((r % 2)); then first=direct; second=proxy; else first=proxy; second=direct; fi
      for dev in $first $second; do
        name="$dio-r$r-$wl-$dev"
        if [ "$dev" = direct ]; then m=$(run_timed "$name" "$loop" "$wl"); else m=$(run_timed "$name" "$proxy" "$wl"); fi
        [ -n "$m" ] || { fail "fio $name"; return 1; }
        res[$wl,$dev,$r]=$m
      done
      printf '  round %d %-8s direct %9.0f IOPS %8.1f MiB/s | proxy %9.0f IOPS %8.1f MiB/s\n' \
        "$r" "$wl" ${res[$wl,direct,$r]} ${res[$wl,proxy,$r]}
    done
    echo "  (load average in the guest: $(cut -d' ' -f1-3 /proc/loadavg))"
  done

  echo
  printf '  %-22s %12s %12s %12s %12s %8s %7s  %s\n' "workload (dio $dio)" "direct IOPS" "proxy IOPS" \
    "direct MiB/s" "proxy MiB/s" "ratio" "target" "per-round ratios"
  for wl in "${workloads[@]}"; do
    local field=1 rs=() di pi dm pm med
    [ "$wl" = seq1m ] && field=2
    for ((r = 1; r <= rounds; r++)); do
      rs+=("$(ratio "$(cut -d' ' -f$field <<< "${res[$wl,proxy,$r]}")" \
                    "$(cut -d' ' -f$field <<< "${res[$wl,direct,$r]}")")")
    done
    di=$(for ((r = 1; r <= rounds; r++)); do cut -d' ' -f1 <<< "${res[$wl,direct,$r]}"; done | median)
    pi=$(for ((r = 1; r <= rounds; r++)); do cut -d' ' -f1 <<< "${res[$wl,proxy,$r]}"; done | median)
    dm=$(for ((r = 1; r <= rounds; r++)); do cut -d' ' -f2 <<< "${res[$wl,direct,$r]}"; done | median)
    pm=$(for ((r = 1; r <= rounds; r++)); do cut -d' ' -f2 <<< "${res[$wl,proxy,$r]}"; done | median)
    med=$(printf '%s\n' "${rs[@]}" | median)
    printf '  %-22s %12.0f %12.0f %12.1f %12.1f %8.3f %7s  %s\n' "${wl_what[$wl]}" "$di" "$pi" "$dm" "$pm" \
      "$med" ">=${wl_target[$wl]}" "${rs[*]}"
    echo "RESULT dio=$dio smp=$(nproc) $wl direct_iops=$di proxy_iops=$pi direct_mibs=$dm proxy_mibs=$pm ratio=$med target=${wl_target[$wl]} rounds=${rs[*]}"
  done

  [ "$do_snapshot" = 1 ] || return 0
  # ---- first write after a snapshot --------------------------------------------------------
  echo
  echo "  first write after CreateSnapshot: $fresh_ios x 4 KiB random writes at QD32, each to its own 256 KiB chunk"
  echo "  (direct, no snapshot and held: the same writes $passes times over)"
  local log=$scratch/fresh.iolog longlog=$scratch/steady.iolog limit id kinds=(direct nosnap fresh held) k
  limit=$(((fresh_ios + 16) * chunk))
  for ((r = 1; r <= rounds; r++)); do
    # The fresh-chunk pass can only be one pass; the others repeat it to run long enough.
    make_iolog "$log" "$loop" "$fresh_ios" "$r" 1
    make_iolog "$longlog" "$loop" "$fresh_ios" "$r" "$passes"
    m=$(run_replay "$dio-r$r-snap-direct" "$loop" "$longlog") || { fail "replay direct"; return 1; }
    res[direct,$r]=$m
    m=$(run_replay "$dio-r$r-snap-nosnap" "$proxy" "$longlog") || { fail "replay nosnap"; return 1; }
    res[nosnap,$r]=$m
    # $diff_dir (lib.sh): in the agent's default diff-storage allowlist.
    id=$(snapshot_create "$limit" "$diff_dir" "$loop")
    [ -n "$id" ] || { fail "CreateSnapshot"; return 1; }
    m=$(run_replay "$dio-r$r-snap-fresh" "$proxy" "$log") || { fail "replay fresh"; return 1; }
    res[fresh,$r]=$m
    local used
    used=$(ctlj snapshot get "$id" | jfield '.diff_storage_used_bytes // "0"')
    m=$(run_replay "$dio-r$r-snap-held" "$proxy" "$longlog") || { fail "replay held"; return 1; }
    res[held,$r]=$m
    ctl snapshot release "$id" > /dev/null || { fail "release snapshot $id"; return 1; }
    printf '  round %d  direct %7.0f  proxy: no snapshot %7.0f  first write %7.0f  held %7.0f IOPS  (diff storage %d MiB)\n' \
      "$r" "$(cut -d' ' -f1 <<< "${res[direct,$r]}")" "$(cut -d' ' -f1 <<< "${res[nosnap,$r]}")" \
      "$(cut -d' ' -f1 <<< "${res[fresh,$r]}")" "$(cut -d' ' -f1 <<< "${res[held,$r]}")" $((used >> 20))
    [ "$do_readers" = 1 ] || continue
    local fw fr_iops fr_lat hw hr_iops hr_lat
    id=$(snapshot_create "$limit" "$diff_dir" "$loop")
    [ -n "$id" ] || { fail "CreateSnapshot"; return 1; }
    m=$(run_replay_with_reader "$dio-r$r-snap-fresh-reads" "$proxy" "$log") ||
      { fail "replay fresh with reader"; return 1; }
    res[freshrd,$r]=$m
    m=$(run_replay_with_reader "$dio-r$r-snap-held-reads" "$proxy" "$longlog") ||
      { fail "replay held with reader"; return 1; }
    res[heldrd,$r]=$m
    ctl snapshot release "$id" > /dev/null || { fail "release snapshot $id"; return 1; }
    read -r fw fr_iops fr_lat <<< "${res[freshrd,$r]}"
    read -r hw hr_iops hr_lat <<< "${res[heldrd,$r]}"
    printf '  round %d  reader beside first writes: %7.0f IOPS, %8.0f us mean (writes %5.0f IOPS); beside held writes: %7.0f IOPS, %8.0f us (writes %5.0f IOPS)\n' \
      "$r" "$fr_iops" "$fr_lat" "$fw" "$hr_iops" "$hr_lat" "$hw"
  done
  local nos fr he dr rf rh rn
  dr=$(for ((r = 1; r <= rounds; r++)); do cut -d' ' -f1 <<< "${res[direct,$r]}"; done | median)
  nos=$(for ((r = 1; r <= rounds; r++)); do cut -d' ' -f1 <<< "${res[nosnap,$r]}"; done | median)
  fr=$(for ((r = 1; r <= rounds; r++)); do cut -d' ' -f1 <<< "${res[fresh,$r]}"; done | median)
  he=$(for ((r = 1; r <= rounds; r++)); do cut -d' ' -f1 <<< "${res[held,$r]}"; done | median)
  rn=$(for ((r = 1; r <= rounds; r++)); do
         ratio "$(cut -d' ' -f1 <<< "${res[nosnap,$r]}")" "$(cut -d' ' -f1 <<< "${res[direct,$r]}")"; done | median)
  rf=$(for ((r = 1; r <= rounds; r++)); do
         ratio "$(cut -d' ' -f1 <<< "${res[fresh,$r]}")" "$(cut -d' ' -f1 <<< "${res[nosnap,$r]}")"; done | median)
  rh=$(for ((r = 1; r <= rounds; r++)); do
         ratio "$(cut -d' ' -f1 <<< "${res[held,$r]}")" "$(cut -d' ' -f1 <<< "${res[nosnap,$r]}")"; done | median)
  printf '  medians: direct %.0f, proxy without snapshot %.0f (%.3fx direct), first write after snapshot %.0f (%.3fx), snapshot held, chunks preserved %.0f (%.3fx) IOPS\n' \
    "$dr" "$nos" "$rn" "$fr" "$rf" "$he" "$rh"
  awk -v n="$nos" -v f="$fr" 'BEGIN { if (n > 0 && f > 0) printf "  per write: %.1f us without snapshot, %.1f us with the chunk copy (QD32 throughput)\n", 1e6 / n, 1e6 / f }'
  echo "RESULT dio=$dio smp=$(nproc) snapshot direct_iops=$dr nosnap_iops=$nos fresh_iops=$fr held_iops=$he nosnap_vs_direct=$rn fresh_vs_nosnap=$rf held_vs_nosnap=$rh"
  [ "$do_readers" = 1 ] || return 0
  local col fields=(fresh_writes fresh_reads fresh_read_us held_writes held_reads held_read_us) out=""
  local i=0 kind
  for kind in freshrd heldrd; do
    for col in 1 2 3; do
      out+=" ${fields[$i]}=$(for ((r = 1; r <= rounds; r++)); do cut -d' ' -f$col <<< "${res[$kind,$r]}"; done | median)"
      i=$((i + 1))
    done
  done
  local rr
  rr=$(for ((r = 1; r <= rounds; r++)); do
         ratio "$(cut -d' ' -f2 <<< "${res[freshrd,$r]}")" "$(cut -d' ' -f2 <<< "${res[heldrd,$r]}")"; done | median)
  echo "  medians (reader beside writes):$out; reads beside first writes / beside held writes: ${rr}x"
  echo "RESULT dio=$dio smp=$(nproc) readers$out reads_fresh_vs_held=$rr"
}

# ---- main ------------------------------------------------------------------------------------
machine
if ! start_agent agent; then fail "cbt-agent --backend ublk starts"; finish; fi
ok "cbt-agent --backend ublk is up"
for dio in "${configs[@]}"; do
  bench_config "$dio" || true
done
echo "load average in the guest at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
expect_clean_stop
finish
