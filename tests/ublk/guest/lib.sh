# lib.sh — sourced by the ublk guest tests (run INSIDE the test VM, see tests/vm/README.md):
#   bash tests/ublk/guest/<test>.sh PATH/TO/ublk-serve
# Generic helpers (results, nap, patterns, CBT map decoding): tests/vm/guest-lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/../../vm/guest-lib.sh"
SERVE=${1:?usage: $0 PATH/TO/ublk-serve}
[ -x "$SERVE" ] || { echo "$0: $SERVE is not executable" >&2; exit 2; }

server_pid=""
server_log=""
DEV=""
DEV_ID=""
cleanup_hooks=()
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    wait_pid "$server_pid" 20 || kill -KILL "$server_pid" 2>/dev/null
  fi
  local hook
  for hook in ${cleanup_hooks[@]+"${cleanup_hooks[@]}"}; do eval "$hook"; done
  rm -rf "$scratch"
}
trap cleanup EXIT

# start_server NAME ARGS...: runs ublk-serve ARGS in the background (stdout in
# $scratch/NAME.out, stderr in $scratch/NAME.err) and waits for its READY line; sets DEV,
# DEV_ID, server_pid, server_log. Fails when it exits or is not ready within 30 s.
start_server() {
  local name=$1 line i
  shift
  server_log=$scratch/$name.out
  "$SERVE" "$@" > "$server_log" 2> "$scratch/$name.err" &
  server_pid=$!
  for ((i = 0; i < 600; i++)); do
    line=$(grep -m 1 '^READY ' "$server_log" 2>/dev/null)
    if [ -n "$line" ]; then
      DEV=$(echo "$line" | awk '{print $2}')
      DEV_ID=$(echo "$line" | sed -n 's/.* id=\([0-9]*\).*/\1/p')
      echo "     $line"
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      wait "$server_pid"
      echo "ublk-serve exited with $?:"; cat "$scratch/$name.err"
      return 1
    fi
    nap 0.05
  done
  echo "ublk-serve not ready after 30 s:"; cat "$scratch/$name.err"
  return 1
}

# stop_server: SIGTERM, then waits (30 s) and returns ublk-serve's exit status. Not in a
# subshell (no check/$(...)): it must wait for its own child.
stop_server() {
  local pid=$server_pid rc
  kill -TERM "$pid" || return 1
  if ! wait_pid "$pid" 30; then
    echo "ublk-serve did not stop within 30 s"
    return 1
  fi
  wait "$pid"
  rc=$?
  server_pid=""
  [ $rc -eq 0 ] || { echo "ublk-serve exited with $rc:"; cat "${server_log%.out}.err"; }
  return $rc
}

# check_stop NAME: stop_server as a result line.
check_stop() {
  if stop_server > "$scratch/stop.log" 2>&1; then ok "$1"; else fail "$1" "$(tail -n 8 "$scratch/stop.log")"; fi
}


# stat_field NAME: a counter from ublk-serve's STATS line.
stat_field() { sed -n "s/^STATS.* $1=\([0-9]*\).*/\1/p" "$server_log"; }

