#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan) and runs each for a
# bounded time over a copy of its committed seed corpus.
#   tests/fuzz/run-fuzzers.sh [SECONDS_PER_TARGET (default 20)]
# Build directory: $CBT_FUZZ_BUILD or <repo>/build-fuzz. New corpus entries and crash artifacts
# go there, never into the repository. Exits non-zero if a target fails to build or crashes.
# The committed corpus (tests/fuzz/corpus/<target>) is the seeds plus the -merge=1 result of a
# local campaign of ~1.5 x 10^7 executions; figures and how to redo it: docs/RELIABILITY.md.
set -euo pipefail

seconds="${1:-20}"
case "$seconds" in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${CBT_FUZZ_BUILD:-$root/build-fuzz}"
targets=(cbt_map_fuzz request_validation_fuzz uapi_emulator_fuzz)

"$root/scripts/install-deps" fuzz

start=$(date +%s)
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=None \
  -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build" --parallel "$(nproc)"
echo "fuzz: build took $(( $(date +%s) - start )) s"

passed=0
failed=0
failed_names=()
for t in "${targets[@]}"; do
  work="$build/run/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ -d "$here/corpus/$t" ]; then cp -r "$here/corpus/$t/." "$work/corpus/"; fi
  log="$work/log.txt"
  echo "fuzz: running $t for ${seconds}s"
  rc=0
  (cd "$work" && ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" \
    "$build/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus") >"$log" 2>&1 || rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz: $t passed: ${execs:-?} executions, corpus $(ls "$work/corpus" | wc -l) inputs"
  else
    failed=$((failed + 1))
    failed_names+=("$t")
    echo "fuzz: $t FAILED (exit $rc) after ${execs:-?} executions; log $log, artifacts:" >&2
    ls "$work/artifacts" >&2 || true
    tail -n 60 "$log" >&2
  fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
