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
make_loop() {
  local file=$scratch/$1.img loop
  truncate -s "$2" "$file" || return 1
  loop=$(losetup -f --show "$file") || return 1
  loops+=("$loop")
  echo "$loop"
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

# cbt_map_file DEV FILE: the raw CBT map of DEV into FILE.
cbt_map_file() { ctl cbt map "$1" --output "$2" > /dev/null; }

# write_at DEV OFFSET LENGTH SOURCE [SKIP]: O_DIRECT write of LENGTH bytes of SOURCE (from
# byte SKIP) at byte OFFSET (all multiples of 4096).
write_at() {
  dd if="$4" of="$1" bs=4096 seek=$(($2 / 4096)) skip=$((${5:-0} / 4096)) \
    count=$(($3 / 4096)) oflag=direct conv=notrunc status=none
}

# sum_of DEV OFFSET LENGTH: md5 of a byte range (O_DIRECT reads).
sum_of() {
  dd if="$1" bs=4096 skip=$(($2 / 4096)) count=$(($3 / 4096)) iflag=direct status=none |
    md5sum | cut -d' ' -f1
}
