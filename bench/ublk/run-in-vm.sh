#!/usr/bin/env bash
# run-in-vm.sh [BUILD_DIR] [--smp N] [--icount SHIFT|off] [--timeout S] [--env NAME=VALUE]... —
# on the host: boots the test guest (tests/vm/run-in-vm.sh) and runs bench/ublk/fio-ratios.sh in
# it against BUILD_DIR's cbt-agent and cbtctl (default BUILD_DIR: build). The benchmark's
# settings are BENCH_* variables (see fio-ratios.sh), passed on with --env or taken from this
# environment. The guest's output, with the ratio tables, goes to stdout; the exit status is the
# guest script's.
#
# --icount SHIFT (default 2): qemu's -icount shift=SHIFT,sleep=off. The guest clock then advances
# 2^SHIFT ns per emulated instruction instead of following the host's clock, so throughput in
# the guest is work per instruction and does not depend on how much CPU other processes leave to
# qemu (repeated runs agree within ~1% on a loaded machine, wall-clock runs vary 2-4x). It also
# makes qemu run the vCPUs one at a time: with --smp 2 the vCPUs do not work in parallel. Use
# --icount off for wall-clock time (and real parallelism with --smp 2).
#
#   cmake --build build --target cbt-agent cbtctl
#   bench/ublk/run-in-vm.sh build                       # 1 vCPU, icount
#   bench/ublk/run-in-vm.sh build --smp 2 --icount off --env BENCH_LOOP_DIO=both
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=build
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then build=$1; shift; fi
build=$(cd "$build" && pwd)
smp=1
icount=2
timeout=3600
vm_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --smp) smp=${2:?}; shift 2 ;;
    --icount) icount=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --env) vm_args+=(--env "${2:?}"); shift 2 ;;
    *) echo "usage: $0 [BUILD_DIR] [--smp N] [--icount SHIFT|off] [--timeout S] [--env NAME=VALUE]..." >&2
       exit 2 ;;
  esac
done
for name in $(compgen -v BENCH_ || true); do vm_args+=(--env "$name=${!name}"); done
agent=$build/agent/server/cbt-agent
cbtctl=$build/agent/cbtctl/cbtctl
for bin in "$agent" "$cbtctl"; do
  [ -x "$bin" ] || { echo "$0: $bin is missing: cmake --build $build --target cbt-agent cbtctl" >&2; exit 2; }
done
# The guest sees the host root read-only (so the binaries wherever they are) plus one work tree
# shared read-write; the benchmark only writes to the guest's own /tmp.
if [ "$icount" != off ]; then
  [[ "$icount" =~ ^[0-9]+$ ]] || { echo "$0: --icount wants a shift (0-10) or off" >&2; exit 2; }
  export CBT_VM_QEMU_ARGS="${CBT_VM_QEMU_ARGS:+$CBT_VM_QEMU_ARGS }-icount shift=$icount,sleep=off"
fi
echo "host: $(uname -r), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); guest: --smp $smp, icount ${icount}"
export CBT_VM_CACHE=${CBT_VM_CACHE:-$build/vm-cache}
export CBT_VM_WORKDIR=${CBT_VM_WORKDIR:-$repo}
rc=0
bash "$repo/tests/vm/run-in-vm.sh" --timeout "$timeout" --smp "$smp" "${vm_args[@]}" -- \
  bash "$repo/bench/ublk/fio-ratios.sh" "$agent" "$cbtctl" || rc=$?
echo "host load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $rc
