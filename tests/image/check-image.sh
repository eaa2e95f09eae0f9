#!/usr/bin/env bash
# Verifies the cbt-agent container image without a container runtime: the image's root
# filesystem (podman image mount) is entered with chroot and the shipped programs are run there.
# As root:
#
#   tests/image/check-image.sh                 build with scripts/build-image, then check
#   tests/image/check-image.sh --image REF     check an image already in the project's store
#
# Checks: image config (entrypoint, default args, stop signal, OCI labels, root user); the
# runtime root holds the two stripped programs and no compiler, headers or -dev packages;
# `cbt-agent --version`; `cbtctl --help` (as root and as the unprivileged "cbt" user); the
# daemon starts with no CBT kernel module (health "" SERVING, cbtagent.v1.CbtAgent NOT_SERVING,
# the health listener answers, capabilities name no backend and say why) and exits 0 on SIGTERM.
# The chroot runs in private mount and PID namespaces: its /proc, /dev, /tmp and /run mounts
# and the daemon cannot outlive the check; the image itself is mounted read-only.
# Ends with "check-image: N passed, N failed"; exit status 1 if anything failed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
script="$here/$(basename "$0")"
source "$here/../../scripts/image/common.sh"

# ---------------------------------------------------------------------------------------------
# Inner part: runs as PID 1 of fresh mount + PID namespaces, with the image mounted at $1.
if [ "${1:-}" = "--inner" ]; then
  image_root="$2" version="$3" results="$4" logdir="$5"
  pass() { echo "PASS $1" >>"$results"; echo "check-image: PASS  $1"; }
  fail() { echo "FAIL $1" >>"$results"; echo "check-image: FAIL  $1${2:+ -- $2}"; }

  root="$logdir/root"
  mkdir -p "$root"
  daemon=""
  cleanup() {
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then kill -KILL "$daemon" 2>/dev/null || true; fi
    umount -R -l "$root" 2>/dev/null || true
  }
  trap cleanup EXIT
  # The image read-only; writable scratch for /tmp and /run; a /proc of this PID namespace; a
  # /dev with only the character devices every program expects. The host's /dev is NOT shown:
  # a block device, blksnap or ublk node there must not be touched by a test.
  mount --bind "$image_root" "$root"
  mount -o remount,bind,ro "$root"
  mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/tmp"
  mount -t tmpfs -o mode=0755,size=16m tmpfs "$root/run"
  mount -t proc proc "$root/proc"
  mount -t tmpfs -o mode=0755,size=1m tmpfs "$root/dev"
  for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
  done
  ln -s /proc/self/fd "$root/dev/fd"

  in_root() { chroot "$root" "$@"; }

  # --version
  if out="$(in_root /usr/bin/cbt-agent --version 2>&1)" && [ "$out" = "cbt-agent $version" ]; then
    pass "cbt-agent --version prints 'cbt-agent $version'"
  else
    fail "cbt-agent --version prints 'cbt-agent $version'" "got: ${out:-<nothing>}"
  fi

  # cbtctl --help, as root and as the unprivileged user
  if out="$(in_root /usr/bin/cbtctl --help 2>&1)" && grep -q health <<<"$out"; then
    pass "cbtctl --help"
  else
    fail "cbtctl --help" "$(head -c 300 <<<"$out" | tr "\n" " ")"
  fi
  if out="$(chroot --userspec=cbt:cbt "$root" /usr/bin/cbtctl --help 2>&1)"; then
    pass "cbtctl --help as user cbt"
  else
    fail "cbtctl --help as user cbt" "$(head -c 300 <<<"$out" | tr "\n" " ")"
  fi

  # The daemon, on a unix socket plus a health listener on a free loopback port. No kernel
  # module here, so backend auto finds none; the agent must start anyway.
  port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
  socket="$root/tmp/agent.sock"
  port=""
  for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    port_free "$port" || continue
    chroot "$root" /usr/bin/cbt-agent --listen=unix:/tmp/agent.sock --state_dir=/tmp/state \
      --health_listen="127.0.0.1:$port" >"$logdir/agent.log" 2>&1 &
    daemon=$!
    for _ in $(seq 1 150); do
      if [ -S "$socket" ] && ! port_free "$port"; then break; fi
      kill -0 "$daemon" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$daemon" 2>/dev/null; then break; fi
    # Lost a race for the port? Try another; any other failure repeats and is reported below.
    wait "$daemon" 2>/dev/null || true
    daemon=""
    grep -qiE "address already in use|cannot listen" "$logdir/agent.log" || break
  done
  if [ -n "$daemon" ] && [ -S "$socket" ] && ! port_free "$port"; then
    pass "cbt-agent starts without a CBT kernel module (unix:/tmp/agent.sock, health 127.0.0.1:$port)"
  else
    fail "cbt-agent starts without a CBT kernel module" "log: $(tail -n 5 "$logdir/agent.log" | tr '\n' ' ')"
  fi

  if [ -n "$daemon" ]; then
    ctl() { in_root /usr/bin/cbtctl --address unix:/tmp/agent.sock "$@"; }
    # health: the server as a whole serves; the CbtAgent service does not (no backend).
    if out="$(ctl health 2>&1)" && grep -qE '(^|[^_])SERVING' <<<"$out" && ! grep -q NOT_SERVING <<<"$out"; then
      pass "cbtctl health: \"\" SERVING"
    else
      fail "cbtctl health: \"\" SERVING" "$(tr '\n' ' ' <<<"$out")"
    fi
    set +e; out="$(ctl health cbtagent.v1.CbtAgent 2>&1)"; rc=$?; set -e
    if [ "$rc" -eq 4 ] && grep -q NOT_SERVING <<<"$out"; then
      pass "cbtctl health cbtagent.v1.CbtAgent: NOT_SERVING (exit 4)"
    else
      fail "cbtctl health cbtagent.v1.CbtAgent: NOT_SERVING (exit 4)" "exit $rc: $(tr '\n' ' ' <<<"$out")"
    fi
    if out="$(in_root /usr/bin/cbtctl --address "127.0.0.1:$port" --insecure health 2>&1)" &&
       grep -q SERVING <<<"$out" && ! grep -q NOT_SERVING <<<"$out"; then
      pass "health listener 127.0.0.1:$port: SERVING"
    else
      fail "health listener 127.0.0.1:$port: SERVING" "$(tr '\n' ' ' <<<"$out")"
    fi
    # capabilities: the agent's version, no backend, and the reason why.
    if out="$(ctl capabilities 2>&1)" &&
       grep -qE "agent version.*$version" <<<"$out" &&
       grep -qiE '^ *backend[ :].*unspecified' <<<"$out" &&
       grep -qiE 'backend reason.*blksnap' <<<"$out"; then
      pass "cbtctl capabilities: no CBT backend ($(grep -i 'backend reason' <<<"$out" | sed -E 's/^ *backend reason:? *//' | head -c 120))"
    else
      fail "cbtctl capabilities: no CBT backend" "$(tr '\n' ' ' <<<"$out")"
    fi

    # SIGTERM: graceful stop, exit status 0.
    kill -TERM "$daemon"
    stopped=""
    for _ in $(seq 1 300); do
      kill -0 "$daemon" 2>/dev/null || { stopped=1; break; }
      sleep 0.1
    done
    if [ -n "$stopped" ]; then
      set +e; wait "$daemon"; rc=$?; set -e
      daemon=""
      if [ "$rc" -eq 0 ]; then
        pass "cbt-agent exits 0 on SIGTERM"
      else
        fail "cbt-agent exits 0 on SIGTERM" "exit $rc; log: $(tail -n 5 "$logdir/agent.log" | tr '\n' ' ')"
      fi
    else
      fail "cbt-agent exits 0 on SIGTERM" "still running 30 s after SIGTERM"
    fi
  fi
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Outer part.
image=""
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image="${2:?--image needs a value}"; shift 2 ;;
    --image=*) image="${1#--image=}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "check-image: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then echo "check-image: run as root (podman store, chroot)" >&2; exit 1; fi

version="$(cbt_version)"
agent_log=/var/tmp/cbt-check-image-agent.log
rm -f "$agent_log"
workdir="$(mktemp -d /var/tmp/cbt-check-image.XXXXXX)"
results="$workdir/results"
: >"$results"
mounted=""
cleanup() {
  [ -n "$mounted" ] && cbt_podman image unmount "$image" >/dev/null 2>&1 || true
  if [ -d "$workdir/root" ] && mountpoint -q "$workdir/root"; then umount -R -l "$workdir/root" || true; fi
  rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT
pass() { echo "PASS $1" >>"$results"; echo "check-image: PASS  $1"; }
fail() { echo "FAIL $1" >>"$results"; echo "check-image: FAIL  $1${2:+ -- $2}"; }
summary() {
  local passed failed
  passed="$(grep -c '^PASS' "$results" || true)"
  failed="$(grep -c '^FAIL' "$results" || true)"
  echo "check-image: image ${image:-<none>}${size:+, $size}"
  if [ -s "$workdir/agent.log" ]; then
    cp "$workdir/agent.log" "$agent_log"
    echo "check-image: daemon log kept in $agent_log"
  fi
  grep '^FAIL' "$results" | sed 's/^FAIL /check-image: failed: /' || true
  echo "check-image: $passed passed, $failed failed"
  [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
}
size=""

if [ -z "$image" ]; then
  image="$(cbt_image_tag)"
  t="$(cbt_now)"
  if "$CBT_REPO_ROOT/scripts/build-image" --tag "$image"; then
    pass "scripts/build-image built $image in $(cbt_elapsed "$t")"
  else
    fail "scripts/build-image built $image"
    summary || exit 1
  fi
fi
if ! cbt_podman image exists "$image"; then
  fail "image $image exists in the project's store ($CBT_IMAGE_ROOT)"
  summary || exit 1
fi
size="$(cbt_podman image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }')"

# --- image configuration --------------------------------------------------------------------
inspect() { cbt_podman image inspect --format "$1" "$image"; }
expect_config() {  # NAME TEMPLATE EXPECTED
  local got
  got="$(inspect "$2" 2>&1)"
  if [ "$got" = "$3" ]; then pass "$1"; else fail "$1" "expected '$3', got '$got'"; fi
}
expect_config "entrypoint /usr/bin/cbt-agent" '{{json .Config.Entrypoint}}' '["/usr/bin/cbt-agent"]'
expect_config "default args" '{{json .Config.Cmd}}' \
  '["--listen=unix:/run/cbt-agent/agent.sock","--state_dir=/var/lib/cbt-agent","--health_listen=0.0.0.0:9811"]'
expect_config "stop signal SIGTERM" '{{.Config.StopSignal}}' 'SIGTERM'
user="$(inspect '{{.Config.User}}')"
if [ -z "$user" ] || [ "$user" = root ] || [ "$user" = 0 ]; then pass "runs as root (see Dockerfile)"; else fail "runs as root" "USER is '$user'"; fi
expect_config "label version = $version" '{{index .Config.Labels "org.opencontainers.image.version"}}' "$version"
expect_config "label title" '{{index .Config.Labels "org.opencontainers.image.title"}}' "cbt-agent"
labels_ok=1
for l in description source licenses; do
  [ -n "$(inspect "{{index .Config.Labels \"org.opencontainers.image.$l\"}}")" ] || labels_ok=0
done
if [ "$labels_ok" -eq 1 ]; then pass "labels description, source, licenses set"; else fail "labels description, source, licenses set"; fi

# --- root filesystem --------------------------------------------------------------------------
if ! image_root="$(cbt_podman image mount "$image")" || [ ! -d "$image_root/usr/bin" ]; then
  fail "podman image mount $image"
  summary || exit 1
fi
mounted=1

for bin in cbt-agent cbtctl; do
  f="$image_root/usr/bin/$bin"
  sections="$(readelf -S -W "$f" 2>&1 || true)"
  if [ -x "$f" ] && grep -q '\.dynsym' <<<"$sections" && ! grep -qE '\.symtab|\.debug_' <<<"$sections"; then
    pass "/usr/bin/$bin present and stripped ($(du -h "$f" | cut -f1))"
  else
    fail "/usr/bin/$bin present and stripped"
  fi
done
present=()
for p in /usr/bin/gcc /usr/bin/g++ /usr/bin/cc /usr/bin/c++ /usr/bin/cpp /usr/bin/ld /usr/bin/cmake \
         /usr/bin/ninja /usr/bin/protoc /usr/include/grpcpp /usr/include/google/protobuf \
         /usr/include/absl /usr/include/liburing.h; do
  if [ -e "$image_root$p" ] || [ -L "$image_root$p" ]; then present+=("$p"); fi
done
if [ ${#present[@]} -eq 0 ]; then pass "no compiler, build tools or headers"; else fail "no compiler, build tools or headers" "found ${present[*]}"; fi
dev="$(awk '/^Package: /{p=$2} /^Status: install ok installed/ && p ~ /-dev$/ {print p}' "$image_root/var/lib/dpkg/status" | tr '\n' ' ')"
if [ -z "$dev" ]; then pass "no -dev packages installed"; else fail "no -dev packages installed" "$dev"; fi
if [ -z "$(ls -A "$image_root/var/lib/apt/lists" 2>/dev/null | grep -v '^lock$\|^partial$' || true)" ]; then
  pass "apt lists cleaned"
else
  fail "apt lists cleaned"
fi
if grep -qE '^cbt:x:[0-9]+:[0-9]+:.*:/usr/sbin/nologin$' "$image_root/etc/passwd"; then
  pass "unprivileged user cbt exists (nologin)"
else
  fail "unprivileged user cbt exists (nologin)"
fi

# --- running the programs ----------------------------------------------------------------------
# Private mount and PID namespaces: every mount made for the chroot, and the daemon, end with it.
unshare --mount --pid --fork --propagation private -- \
  bash "$script" --inner "$image_root" "$version" "$results" "$workdir" ||
  fail "chroot checks ran to the end" "exit $?"

summary
