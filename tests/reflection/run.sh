#!/usr/bin/env bash
# Starts the blksnap emulator and the real cbt-agent on a Unix socket, then runs the
# reflection-only client against it.
# usage: run.sh <cbt-agent binary> <blksnap-emulator binary>
set -euo pipefail
agent_bin=$1
emulator_bin=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/cbt-reflection.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_for_socket() {
  for _ in $(seq 1 100); do [ -S "$1" ] && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2
  return 1
}

if [ ! -d "$here/node_modules/grpc-js-reflection-client" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

mkdir -p "$work/backing" "$work/state"
"$emulator_bin" --socket="$work/kernel.sock" --flavour=lk6.15 --kernel_release=6.15.0-emu \
  --backing_dir="$work/backing" --device=/dev/emu-reflect:64M:8:16 &
pids+=($!)
wait_for_socket "$work/kernel.sock"

"$agent_bin" --listen="unix:$work/agent.sock" --state_dir="$work/state" --backend=blksnap \
  --blksnap_emulator_socket="$work/kernel.sock" &
pids+=($!)
wait_for_socket "$work/agent.sock"

node "$here/reflection_test.mjs" "unix:$work/agent.sock" /dev/emu-reflect
