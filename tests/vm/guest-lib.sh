# guest-lib.sh — sourced by the guest test scripts, which run INSIDE the test VM (README.md).
# Result lines "ok   - ..." / "FAIL - ..." with the seconds each step took, then
# "<test>: N passed, M failed"; finish() exits 1 if anything failed. Provides test_name, a fresh
# $scratch directory (the caller's EXIT trap removes it), nap, wait_pid, wait_allocated,
# pattern, marked_blocks.
set -uo pipefail

if [ "${CBT_VM:-}" != 1 ]; then
  echo "$0: run me in the VM: bash tests/vm/run-in-vm.sh -- bash $0 ..." >&2
  exit 2
fi
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

scratch=$(mktemp -d /tmp/$test_name.XXXXXX)
# nap SECONDS: sleep without exec'ing /usr/bin/sleep (an exec costs ~0.1-0.5 s under TCG):
# a read that times out on a FIFO nobody writes to.
mkfifo "$scratch/nap"
exec {nap_fd}<> "$scratch/nap"
nap() { read -r -t "$1" -u "$nap_fd" _ || true; }

# wait_pid PID SECONDS: waits for a process (any, not only a child) to end.
wait_pid() {
  local pid=$1 i
  for ((i = 0; i < $2 * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    nap 0.05
  done
  return 1
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
