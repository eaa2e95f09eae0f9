#!/usr/bin/env bash
# smoke.sh — run INSIDE the test VM (tests/vm/run-in-vm.sh -- bash tests/vm/smoke.sh): proves the
# guest is fit for the ublk tests. Prints one line per check and, last, "vm-smoke: N passed,
# M failed"; exits 1 if any check failed.
set -uo pipefail

if [ "${CBT_VM:-}" != 1 ]; then
  echo "smoke.sh: run me in the VM: bash tests/vm/run-in-vm.sh -- bash $0" >&2
  exit 2
fi

passed=0
failed=0
usec() { local t=${EPOCHREALTIME/[.,]/}; now=$((10#$t)); }
usec; t0=$now
# Seconds since the previous result line: TCG is slow, and this shows where the time goes.
lap() { local now d; usec; d=$((now - t0)); t0=$now; printf -v took '%d.%02ds' $((d / 1000000)) $((d / 10000 % 100)); }
ok() { lap; echo "ok   - $1 ($took)"; passed=$((passed + 1)); }
fail() { lap; echo "FAIL - $1 ($took)${2:+: $2}"; failed=$((failed + 1)); }
skip() { echo "skip - $1: $2"; }
# check NAME COMMAND...: passes when COMMAND succeeds; its output is shown only on failure.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$out" | tail -n 5)"; fi
}

scratch=$(mktemp -d /tmp/vm-smoke.XXXXXX)
loopdev=""
cleanup() {
  mountpoint -q "$scratch/mnt" 2>/dev/null && umount "$scratch/mnt"
  [ -z "$loopdev" ] || losetup -d "$loopdev" 2>/dev/null
  rm -rf "$scratch"
}
trap cleanup EXIT

# --- the kernel -------------------------------------------------------------------------------
krel=$(uname -r)
if [[ "$krel" == 6.12.* ]]; then ok "kernel is 6.12.x ($krel)"; else fail "kernel is 6.12.x" "uname -r = $krel"; fi
check "ublk_drv loaded" grep -q '^ublk_drv ' /proc/modules
check "/dev/ublk-control is a character device" test -c /dev/ublk-control
check "io_uring enabled" test "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" = 0

# --- the environment the tests run in ---------------------------------------------------------
check "running as root" test "$(id -u)" = 0
check "host root is read-only" bash -c '! touch /usr/.vm-smoke-probe 2>/dev/null'
check "work tree is writable" bash -c 'echo x > .vm-smoke-probe && test "$(cat .vm-smoke-probe)" = x && rm .vm-smoke-probe'
check "/tmp is a tmpfs with >= 512 MiB free" \
  bash -c '[ "$(stat -f -c %T /tmp)" = tmpfs ] && [ $(( $(stat -f -c "%a * %S" /tmp) )) -ge $((512 << 20)) ]'
check "/dev/shm and /run are writable" bash -c 'touch /dev/shm/p /run/p && rm /dev/shm/p /run/p'
check "/dev/fd (bash process substitution)" bash -c 'cmp <(echo a) <(echo a)'
check "loopback interface is up" bash -c '(( $(cat /sys/class/net/lo/flags) & 1 ))'

# --- block devices: loop + ext4 ---------------------------------------------------------------
check "loop module loaded" grep -q '^loop ' /proc/modules
truncate -s 64M "$scratch/disk.img"
if loopdev=$(losetup -f --show "$scratch/disk.img" 2>&1) && [ -b "$loopdev" ]; then
  ok "losetup -f --show ($loopdev)"
  check "loop device size is 64 MiB" test "$(blockdev --getsize64 "$loopdev")" = $((64 << 20))
  # A cheap pattern: /dev/urandom is slow under TCG.
  head -c 4M /dev/zero | tr '\0' 'u' > "$scratch/pattern"
  check "O_DIRECT write + read-back on the loop device" bash -c \
    "dd if='$scratch/pattern' of='$loopdev' bs=64k oflag=direct status=none &&
     dd if='$loopdev' of='$scratch/back' bs=64k count=64 iflag=direct status=none &&
     cmp '$scratch/pattern' '$scratch/back'"
  if command -v mkfs.ext4 >/dev/null; then
    mkdir -p "$scratch/mnt"
    check "mkfs.ext4 + mount + write + umount" bash -c \
      "mkfs.ext4 -q -F -E nodiscard,assume_storage_prezeroed=1 '$loopdev' && mount -t ext4 '$loopdev' '$scratch/mnt' &&
       cp '$scratch/pattern' '$scratch/mnt/f' && sync && umount '$scratch/mnt' &&
       mount -t ext4 -o ro '$loopdev' '$scratch/mnt' && cmp '$scratch/pattern' '$scratch/mnt/f' &&
       umount '$scratch/mnt'"
  else
    fail "mkfs.ext4 present" "e2fsprogs is not installed on the host"
  fi
  if command -v fio >/dev/null; then
    check "fio --version" fio --version
    # io_uring + O_DIRECT with verification: what the ublk tests will lean on.
    check "fio io_uring randwrite+verify on the loop device" \
      fio --name=smoke --filename="$loopdev" --ioengine=io_uring --direct=1 --rw=randwrite \
        --bs=16k --size=4M --iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 \
        --output-format=terse
  else
    skip "fio" "not installed on the host (scripts/install-deps vm installs it)"
  fi
  if losetup -d "$loopdev"; then ok "losetup -d"; loopdev=""; else fail "losetup -d"; fi
else
  fail "losetup -f --show" "$loopdev"
  loopdev=""
fi

echo "vm-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
