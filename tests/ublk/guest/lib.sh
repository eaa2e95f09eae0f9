# lib.sh — sourced by the ublk guest tests (run INSIDE the test VM, see tests/vm/README.md):
#   bash tests/ublk/guest/<test>.sh PATH/TO/ublk-serve
# Result lines "ok   - ..." / "FAIL - ..." with the seconds each step took, then
# "<test>: N passed, M failed"; finish() exits 1 if anything failed.
set -uo pipefail

if [ "${CBT_VM:-}" != 1 ]; then
  echo "$0: run me in the VM: bash tests/vm/run-in-vm.sh -- bash $0 PATH/TO/ublk-serve" >&2
  exit 2
fi
SERVE=${1:?usage: $0 PATH/TO/ublk-serve}
[ -x "$SERVE" ] || { echo "$0: $SERVE is not executable" >&2; exit 2; }
test_name=$(basename "$0" .sh)

passed=0
failed=0
usec() { local t=${EPOCHREALTIME/[.,]/}; now=$((10#$t)); }
usec; t0=$now; t_start=$now
lap() { local now d; usec; d=$((now - t0)); t0=$now; printf -v took '%d.%02ds' $((d / 1000000)) $((d / 10000 % 100)); }
ok() { lap; echo "ok   - $1 ($took)"; passed=$((passed + 1)); }
fail() { lap; echo "FAIL - $1 ($took)${2:+: $2}"; failed=$((failed + 1)); }
# check NAME COMMAND...: passes when COMMAND succeeds; its output is shown only on failure.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$out" | tail -n 8)"; fi
}
# expect_eq NAME WANT GOT
expect_eq() { if [ "$2" = "$3" ]; then ok "$1 ($3)"; else fail "$1" "want '$2', got '$3'"; fi; }

scratch=$(mktemp -d /tmp/ublk-$test_name.XXXXXX)
# nap SECONDS: sleep without exec'ing /usr/bin/sleep (an exec costs ~0.1-0.5 s under TCG):
# a read that times out on a FIFO nobody writes to.
mkfifo "$scratch/nap"
exec {nap_fd}<> "$scratch/nap"
nap() { read -r -t "$1" -u "$nap_fd" _ || true; }
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

# wait_pid PID SECONDS: waits for a process (any, not only a child) to end.
wait_pid() {
  local pid=$1 i
  for ((i = 0; i < $2 * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    nap 0.05
  done
  return 1
}

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

# wait_allocated FILE BLOCKS: waits (30 s) until FILE has BLOCKS 512-byte blocks allocated —
# on tmpfs, proof that writes through the device arrived.
wait_allocated() {
  local i
  for ((i = 0; i < 600; i++)); do
    [ "$(stat -c %b "$1")" -ge "$2" ] && return 0
    nap 0.05
  done
  echo "$1: only $(stat -c %b "$1") blocks allocated after 30 s"
  return 1
}

# stat_field NAME: a counter from ublk-serve's STATS line.
stat_field() { sed -n "s/^STATS.* $1=\([0-9]*\).*/\1/p" "$server_log"; }

# pattern FILE SIZE: a cheap, position-dependent pattern (/dev/urandom is slow under TCG).
pattern() { seq -f 'ublk-pattern-%012g' 0 $(($2 / 25 + 1)) | head -c "$2" > "$1"; }

# marked_blocks MAPFILE: the nonzero bytes (changed blocks) as index ranges: "0 2-3 512-527".
marked_blocks() {
  od -An -v -tu1 -w1 "$1" | awk '
    function flush() { if (first >= 0) { printf "%s%s", sep, (first == last ? first : first "-" last); sep = " " } }
    BEGIN { first = -1 }
    $1 != 0 { i = NR - 1; if (first >= 0 && i == last + 1) { last = i } else { flush(); first = last = i } }
    END { flush() }'
}

finish() {
  local now
  usec
  printf -v total '%d.%02ds' $(((now - t_start) / 1000000)) $(((now - t_start) / 10000 % 100))
  echo "$test_name: $passed passed, $failed failed ($total)"
  [ "$failed" -eq 0 ]
  exit
}
