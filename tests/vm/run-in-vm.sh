#!/usr/bin/env bash
# run-in-vm.sh [--timeout SECONDS] [--mem MB] [--smp N] [--env NAME=VALUE]... -- COMMAND [ARGS...]
# run-in-vm.sh --prepare
#
# Runs COMMAND as root on a real Linux 6.12 kernel with ublk_drv, loop and ext4 loaded: a QEMU
# guest (TCG; KVM is unusable on the CI machines), booted from Debian's linux-image-6.12-amd64
# and a tiny busybox initramfs. The guest sees this machine's root file system read-only (9p) and
# runs COMMAND chrooted into it, so host binaries and libraries just work. The work tree
# ($CBT_VM_WORKDIR, default $PWD) is shared read-write at the same path. COMMAND runs in $PWD if
# that lies inside the work tree, otherwise in the work tree itself. The guest's serial console
# (COMMAND's stdout and stderr, plus kernel warnings) is copied to this script's stdout.
#
# In the guest: /tmp (TMP_SIZE, default 75% of guest RAM), /run and /dev/shm are fresh tmpfs,
# HOME=/tmp/home, stdin is /dev/null, CBT_VM=1, PATH is the standard one, the loopback interface
# is up, there is no other network. Everything else in the host root is read-only.
#
# --prepare   only fetch the kernel and build the initramfs (the CTest fixture does this once)
# --timeout   whole-VM limit in seconds, boot included (default 300)
# --mem       guest RAM in MiB (default 2048)
# --smp       guest CPUs (default 1: under TCG a second vCPU makes a typical test ~2x slower
#             overall — cross-CPU TLB flushes stop all vCPUs; use 2+ only to test concurrency)
# --env       extra environment variable for COMMAND (repeatable)
#
# Environment:
#   CBT_VM_CACHE    kernel + initramfs cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/cbt-agent-vm)
#   CBT_VM_WORKDIR  directory shared read-write (default $PWD)
#   CBT_VM_REQUIRED 1: a missing qemu/busybox-static is an error, not a skip (default 1 when CI=true)
#   CBT_VM_TMP_SIZE size of the guest's /tmp tmpfs (default 75%)
#   CBT_VM_QEMU_ARGS extra qemu arguments (word-split), e.g. for debugging
#   CBT_VM_DEBUG    1: the guest's /init prints its stages with uptimes
#   CBT_VM_KERNEL_ARGS extra kernel command line, e.g. "loglevel=7" (quiet hides all but warnings)
#
# Exit status: COMMAND's own status (0-255);
#   124  the timeout expired (qemu killed);
#   125  the VM failed: qemu could not start, the guest setup failed, or the guest died (panic,
#        crash) without reporting a status — the reason is printed on stderr;
#   77   qemu-system-x86_64 or busybox-static is missing (CTest SKIP_RETURN_CODE), unless
#        CBT_VM_REQUIRED=1, then 125. Install them with: scripts/install-deps vm
#   2    usage error.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
log() { echo "run-in-vm: $*" >&2; }
usage() { sed -n '2,3p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}/usage: /' >&2; exit 2; }

timeout_s=300
mem=2048
smp=1
prepare=0
envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout_s=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --smp) smp=${2:?}; shift 2 ;;
    --env)
      [[ "${2:-}" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || { log "--env wants NAME=VALUE"; usage; }
      envs+=("$2"); shift 2 ;;
    --prepare) prepare=1; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) log "unknown option '$1'"; usage ;;
  esac
done
for n in "$timeout_s" "$mem" "$smp"; do [[ "$n" =~ ^[1-9][0-9]*$ ]] || { log "not a positive number: $n"; usage; }; done
if [ $prepare = 0 ] && [ $# -eq 0 ]; then usage; fi

# --- host prerequisites -----------------------------------------------------------------------
required=${CBT_VM_REQUIRED:-}
if [ -z "$required" ]; then
  if [ "${CI:-}" = true ]; then required=1; else required=0; fi
fi
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86_64)
busybox=/bin/busybox
# The initramfs has no libc: the busybox must be the static one (package busybox-static).
if [ ! -x $busybox ] || LC_ALL=C ldd $busybox >/dev/null 2>&1; then missing+=("static $busybox"); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$required" = 1 ]; then
    log "error: ${missing[*]} not found (needed to run VM tests); install with: scripts/install-deps vm"
    exit 125
  fi
  log "SKIP: ${missing[*]} not found; install with: scripts/install-deps vm"
  exit 77
fi

cache=${CBT_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cbt-agent-vm}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)

# --- kernel + initramfs (cached) --------------------------------------------------------------
krel=$(bash "$here/fetch-kernel.sh" "$cache/kernel") || { log "error: could not fetch the kernel"; exit 125; }
kdir=$cache/kernel/$krel

# The base initramfs (busybox, modules, /init) is rebuilt whenever one of its inputs changes.
base_key=$( {
  echo "$krel"; cat "$kdir/stamp" "$kdir/modules.load" "$here/init.sh"
  stat -c '%s %Y' $busybox
} | sha256sum | cut -c1-16)
base=$cache/initramfs-$base_key.cpio.gz
if [ ! -f "$base" ]; then
  (
    flock 9
    if [ ! -f "$base" ]; then
      t=$(mktemp -d "$cache/.initramfs.XXXXXX")
      trap 'rm -rf "$t"' EXIT
      mkdir -p "$t"/root/{bin,dev,proc,sys,tmp,lib/modules,host}
      cp $busybox "$t/root/bin/busybox"
      for a in $($busybox --list); do
        [ "$a" = busybox ] || ln -s busybox "$t/root/bin/$a"
      done
      cp "$kdir"/modules/*.ko "$t/root/lib/modules/"
      cp "$kdir/modules.load" "$t/root/lib/modules/load"
      install -m 755 "$here/init.sh" "$t/root/init"
      (cd "$t/root" && find . | LC_ALL=C sort | $busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -6) > "$t/initramfs"
      rm -f "$cache"/initramfs-*.cpio.gz
      mv "$t/initramfs" "$base"
    fi
  ) 9>"$cache/.initramfs.lock"
fi
if [ $prepare = 1 ]; then
  log "kernel $krel and initramfs ready in $cache"
  exit 0
fi

# --- this run ---------------------------------------------------------------------------------
workdir=$(cd "${CBT_VM_WORKDIR:-$PWD}" && pwd -P)
[ "$workdir" != / ] || { log "error: the work tree must not be / (it is shared read-write)"; exit 2; }
cwd=$(pwd -P)
case "$cwd/" in "$workdir"/*) ;; *) cwd=$workdir ;; esac

# Runs killed with SIGKILL leave their scratch directory behind.
find "$cache" -maxdepth 1 -name '.run.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
run=$(mktemp -d "$cache/.run.XXXXXX")
qpid=""
cleanup() {
  if [ -n "$qpid" ]; then kill "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
  rm -rf "$run"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# The command goes in as a bash script for the chroot; every word is %q-quoted, so arguments may
# hold any character (spaces and newlines included).
mkdir "$run/cpio"
{
  echo '# generated by run-in-vm.sh'
  printf 'export PATH=%q HOME=/tmp/home TERM=dumb LANG=C.UTF-8 CBT_VM=1\n' \
    /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  for e in ${envs[@]+"${envs[@]}"}; do printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; done
  printf 'cd -- %q || exit 125\n' "$cwd"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$run/cpio/cmd.sh"
{
  printf 'WORKDIR=%q\n' "$workdir"
  printf 'CWD=%q\n' "$cwd"
  printf 'TMP_SIZE=%q\n' "${CBT_VM_TMP_SIZE:-75%}"
  printf 'DEBUG=%q\n' "${CBT_VM_DEBUG:-0}"
} > "$run/cpio/run.conf"
# A small uncompressed cpio archive in front of the cached compressed one; the kernel unpacks both.
# (Uncompressed after compressed fails: "invalid magic at start of compressed archive".)
(cd "$run/cpio" && printf '%s\n' cmd.sh run.conf | $busybox cpio -o -H newc -R 0:0 2>/dev/null) > "$run/initrd"
cat "$base" >> "$run/initrd"

# The uncompressed ELF kernel boots via PVH and skips the slow in-guest decompression.
kernel=$kdir/vmlinux
[ -f "$kernel" ] || kernel=$kdir/vmlinuz
qemu_escape() { echo "${1//,/,,}"; }   # qemu option values: a comma is written twice
# qboot instead of SeaBIOS: the firmware phase takes a fraction of the time under TCG.
bios=()
if [ -f /usr/share/qemu/qboot.rom ]; then bios=(-bios /usr/share/qemu/qboot.rom); fi
# shellcheck disable=SC2054  # the commas are qemu syntax
qemu=(qemu-system-x86_64
  -accel tcg -machine pc -cpu max -m "$mem" -smp "$smp"
  -nodefaults -display none -no-reboot
  ${bios[@]+"${bios[@]}"}
  -kernel "$kernel" -initrd "$run/initrd"
  -append "console=ttyS0 panic=-1 quiet no_timer_check ${CBT_VM_KERNEL_ARGS:-}"
  -serial stdio
  -serial "file:$run/status"
  -device isa-debug-exit,iobase=0xf4,iosize=0x04
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
  -virtfs "local,path=$(qemu_escape "$workdir"),mount_tag=work,security_model=none,multidevs=remap"
)
# shellcheck disable=SC2206
[ -z "${CBT_VM_QEMU_ARGS:-}" ] || qemu+=(${CBT_VM_QEMU_ARGS})

start=$(date +%s.%N)
# In the background so that an interrupted run (Ctrl-C, CTest) can take qemu down with it.
timeout -k 10 "$timeout_s" "${qemu[@]}" < /dev/null &
qpid=$!
set +e
wait "$qpid"
qrc=$?
set -e
qpid=""
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

line=$(tr -d '\r' 2>/dev/null < "$run/status" | grep -a -m 1 -E '^cbt-vm-(status [0-9]{1,3}$|error )') || true
case "$line" in
  "cbt-vm-status "*)
    rc=${line#cbt-vm-status }
    log "command exited $rc after ${elapsed}s (kernel $krel)"
    exit "$rc" ;;
  "cbt-vm-error "*)
    log "error: guest setup failed: ${line#cbt-vm-error } (after ${elapsed}s)"
    exit 125 ;;
esac
if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
  log "error: timed out after ${timeout_s}s; the guest was killed (see its console output above)"
  exit 124
fi
log "error: the guest ended without reporting a status after ${elapsed}s (qemu exit status $qrc):" \
  "qemu failed to start, or the kernel panicked or hung up; see the output above"
exit 125
