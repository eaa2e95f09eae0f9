# lib.sh — sourced by the ublk-backend scenarios, which run INSIDE the test VM against the real
# daemon with --backend=ublk, driven through its gRPC API with cbtctl:
#   bash tests/ublk_agent/guest/<scenario>.sh PATH/TO/cbt-agent PATH/TO/cbtctl
# Generic helpers (results, nap, patterns, CBT map decoding): tests/vm/guest-lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/../../vm/guest-lib.sh"
AGENT=${1:?usage: $0 PATH/TO/cbt-agent PATH/TO/cbtctl}
CBTCTL=${2:?usage: $0 PATH/TO/cbt-agent PATH/TO/cbtctl}
for bin in "$AGENT" "$CBTCTL"; do
  [ -x "$bin" ] || { echo "$0: $bin is not executable" >&2; exit 2; }
done

sock=$scratch/agent.sock
state_dir=$scratch/state
# Diff storage for snapshots: the agent allows only listed directories, by default the "diff"
# directory in its state directory.
diff_dir=$state_dir/diff
mkdir -p "$diff_dir"
agent_pid=""
agent_log=""
loops=()
cleanup_hooks=()
cleanup() {
  local hook loop
  for hook in ${cleanup_hooks[@]+"${cleanup_hooks[@]}"}; do eval "$hook"; done
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null
    wait_pid "$agent_pid" 30 || kill -KILL "$agent_pid" 2>/dev/null
  fi
  # make_loop runs in command substitutions, so it lists its devices in a file, not in loops.
  [ -f "$scratch/loops" ] && mapfile -t -O "${#loops[@]}" loops < "$scratch/loops"
  for loop in ${loops[@]+"${loops[@]}"}; do losetup -d "$loop" 2>/dev/null; done
  rm -rf "$scratch"
}
trap cleanup EXIT

# ctl ARGS...: cbtctl against this test's agent. ctlj: the same with --json.
ctl() { "$CBTCTL" --address "unix:$sock" "$@"; }
ctlj() { "$CBTCTL" --address "unix:$sock" --json "$@"; }

# start_agent NAME [FLAGS...]: runs the daemon with the ublk backend (log in $scratch/NAME.log)
# and waits until it answers health checks; sets agent_pid, agent_log.
start_agent() {
  local name=$1 i
  shift
  agent_log=$scratch/$name.log
  "$AGENT" --listen "unix:$sock" --state_dir "$state_dir" --backend ublk "$@" \
    > "$agent_log" 2>&1 &
  agent_pid=$!
  for ((i = 0; i < 600; i++)); do
    if [ -S "$sock" ] && ctl --timeout 5 health > /dev/null 2>&1; then return 0; fi
    if ! kill -0 "$agent_pid" 2>/dev/null; then
      wait "$agent_pid"
      echo "cbt-agent exited with $?:"; tail -n 20 "$agent_log"
      agent_pid=""
      return 1
    fi
    nap 0.05
  done
  echo "cbt-agent not healthy after 30 s:"; tail -n 20 "$agent_log"
  return 1
}

# stop_agent: SIGTERM, waits (60 s), returns the daemon's exit status. Not in a subshell.
stop_agent() {
  local pid=$agent_pid rc
  kill -TERM "$pid" || return 1
  wait_pid "$pid" 60 || { echo "cbt-agent did not stop within 60 s"; return 1; }
  wait "$pid"
  rc=$?
  agent_pid=""
  [ $rc -eq 0 ] || { echo "cbt-agent exited with $rc:"; tail -n 20 "$agent_log"; }
  return $rc
}

# kill_agent: SIGKILL, as a crash.
kill_agent() {
  kill -KILL "$agent_pid" 2>/dev/null
  wait "$agent_pid" 2>/dev/null
  agent_pid=""
}

# make_loop NAME SIZE: a loop device over a new file in $scratch (tmpfs); prints /dev/loopN.
# Detached at exit.
make_loop() {
  local file=$scratch/$1.img loop
  truncate -s "$2" "$file" || return 1
  loop=$(losetup -f --show "$file") || return 1
  echo "$loop" >> "$scratch/loops"
  echo "$loop"
}

# expect_clean_stop [WHAT]: stop_agent, as a result line (WHAT: "agent stops cleanly").
expect_clean_stop() {
  local what=${1:-agent stops cleanly}
  if stop_agent > "$scratch/stop.out" 2>&1; then
    ok "$what"
  else
    fail "$what" "$(tail -n 5 "$scratch/stop.out")"
  fi
}

# start_tracked SIZE: what most scenarios begin with. A loop device "origin" of SIZE bytes, the
# agent started, the device attached; sets origin and proxy. A failure ends the scenario.
start_tracked() {
  origin=$(make_loop origin "$1") || { fail "loop device"; finish; }
  if ! start_agent agent; then fail "agent starts"; finish; fi
  proxy=$(attach "$origin")
  check "attached as $proxy" test -b "$proxy"
}

# Field of a JSON reply on stdin (proto field names; 64-bit numbers are JSON strings).
jfield() { jq -r "$1"; }

# attach DEV: prints the proxy path (io_path) the agent serves DEV as.
attach() { ctlj attach "$1" | jfield '.tracker.io_path'; }

# cbt_info DEV: "GENERATION CHANGES_NUMBER".
cbt_info() { ctlj cbt info "$1" | jfield '"\(.generation_id) \(.changes_number // 0)"'; }

# snapshot_create LIMIT DIFF_PATH DEV...: prints the snapshot id.
snapshot_create() {
  local limit=$1 diff=$2
  shift 2
  ctlj snapshot create --diff-storage "$diff" --limit "$limit" "$@" | jfield '.snapshot.id'
}

# image_of ID DEV: the image path of DEV in snapshot ID.
image_of() {
  ctlj snapshot get "$1" |
    jq -r --arg d "$2" '.devices[] | select(.device == $d) | .image_path'
}

# extents DEV GEN K: changed extents since (GEN, K), one "offset length" per line.
extents() {
  ctlj cbt extents "$1" --base-generation "$2" --base-changes "$3" |
    jq -r '.extents[]? | "\(.offset // 0) \(.length)"'
}

# start_watch FILE: `cbtctl --json watch` in the background, its events (one JSON object a line)
# into FILE; sets watch_pid (stopped at exit). Whether the stream is subscribed yet cannot be
# seen: sync with an event (e.g. a snapshot released) before relying on it.
watch_pid=""
start_watch() {
  "$CBTCTL" --address "unix:$sock" --json watch > "$1" 2> "$1.err" &
  watch_pid=$!
  cleanup_hooks+=("kill -TERM $watch_pid 2>/dev/null")
}

# wait_event FILE FILTER [SECONDS]: waits (20 s) for a line of FILE (start_watch) that the jq
# FILTER selects, and prints the first such line.
wait_event() {
  local i line
  for ((i = 0; i < ${3:-20} * 5; i++)); do
    line=$(jq -c "select($2)" "$1" 2>/dev/null | head -n 1)
    [ -n "$line" ] && { echo "$line"; return 0; }
    nap 0.2
  done
  echo "no event matching $2 in ${3:-20} s: $(tail -n 3 "$1" "$1.err")"
  return 1
}

# block_extents BLOCK_SIZE "OFFSET LENGTH"...: byte ranges rounded out to CBT blocks and merged,
# as GetChangedExtents reports them ("offset length" lines, like extents() prints).
block_extents() {
  local bs=$1 w off len
  shift
  for w in "$@"; do
    read -r off len <<< "$w"
    echo "$((off / bs * bs)) $(((off + len + bs - 1) / bs * bs - off / bs * bs))"
  done | sort -n | awk '
    { if (n && $1 <= o + l) { e = $1 + $2; if (e > o + l) l = e - o } else { if (n) print o, l; o = $1; l = $2; n = 1 } }
    END { if (n) print o, l }'
}

# lines < TEXT: the lines of TEXT joined with ", " (multi-line values on one result line).
lines() { local text; text=$(cat); echo "${text//$'\n'/, }"; }

# cbt_map_file DEV FILE: the raw CBT map of DEV into FILE.
# (cbtctl's progress line on stderr is shown only on failure.)
cbt_map_file() {
  ctl cbt map "$1" --output "$2" > /dev/null 2> "$2.err" || { cat "$2.err"; return 1; }
}

# write_at DEV OFFSET LENGTH SOURCE [SKIP]: O_DIRECT write of LENGTH bytes of SOURCE (from
# byte SKIP) at byte OFFSET (all multiples of 4096), in the largest blocks (up to 1 MiB) that
# divide all three.
write_at() {
  local bs=$((1 << 20)) skip=${5:-0}
  while (($2 % bs || $3 % bs || skip % bs)); do bs=$((bs / 2)); done
  dd if="$4" of="$1" bs=$bs seek=$(($2 / bs)) skip=$((skip / bs)) \
    count=$(($3 / bs)) oflag=direct conv=notrunc status=none
}

# mirror_write DEV FILE OFFSET LENGTH SOURCE: write_at DEV, and the same bytes into the plain
# FILE that holds what DEV should contain (compare with sum_of DEV and md5sum FILE).
mirror_write() {
  write_at "$1" "$3" "$4" "$5" &&
    dd if="$5" of="$2" bs=4096 seek=$(($3 / 4096)) count=$(($4 / 4096)) conv=notrunc status=none
}

# sum_of DEV OFFSET LENGTH: md5 of a byte range (O_DIRECT reads, multiples of 512), read in the
# largest blocks (up to 1 MiB) that divide both: every exec and request is slow under TCG.
sum_of() {
  local bs=$((1 << 20))
  while (($2 % bs || $3 % bs)); do bs=$((bs / 2)); done
  dd if="$1" bs=$bs skip=$(($2 / bs)) count=$(($3 / bs)) iflag=direct status=none |
    md5sum | cut -d' ' -f1
}

# sum_file FILE OFFSET LENGTH: md5 of a byte range of a plain file (the expected contents).
sum_file() { tail -c +$(($2 + 1)) "$1" | head -c "$3" | md5sum | cut -d' ' -f1; }

# fio_job NAME FIO-ARGS...: one fio job NAME with io_uring, O_DIRECT and crc32c verify headers
# (verify errors fatal, no verify state files); the JSON report goes to $scratch/NAME.json and
# fio's messages to $scratch/NAME.err. Prints "BYTES-WRITTEN BYTES-READ" (verify reads count as
# reads; a --verify_only pass reports the writes it skipped); on failure (fio's status, or an
# error in the report) prints fio's last messages instead and returns 1.
fio_job() {
  local name=$1
  shift
  fio --name="$name" --ioengine=io_uring --direct=1 --verify=crc32c --verify_fatal=1 \
    --verify_state_save=0 --output-format=json --output="$scratch/$name.json" "$@" \
    > "$scratch/$name.err" 2>&1 || { fio_failure "$name"; return 1; }
  jq -e '.jobs[0].error == 0' "$scratch/$name.json" > /dev/null || { fio_failure "$name"; return 1; }
  jq -r '.jobs[0] | "\(.write.io_kbytes * 1024) \(.read.io_kbytes * 1024)"' "$scratch/$name.json"
}
# expect_fio WHAT WANT NAME FIO-ARGS...: fio_job NAME FIO-ARGS... passes when it prints WANT
# ("WRITTEN VERIFIED"; for a --verify_only pass, which skips the writes, only "VERIFIED"); a
# failed fio fails WHAT with fio's messages.
expect_fio() {
  local what=$1 want=$2 got
  shift 2
  if ! got=$(fio_job "$@"); then
    fail "$what" "$got"
    return
  fi
  case " $* " in *" --verify_only "*) got=${got#* } ;; esac
  expect_eq "$what" "$want" "$got"
}
# fio_failure NAME: fio's messages and the error in its report, for a FAIL line.
fio_failure() {
  tail -n 5 "$scratch/$1.err"
  jq -r '.jobs[0] | "fio error \(.error)"' "$scratch/$1.json" 2>/dev/null
}
