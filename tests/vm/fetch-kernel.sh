#!/usr/bin/env bash
# fetch-kernel.sh CACHE_DIR
#
# Puts a Debian 6.12 kernel that has ublk_drv into CACHE_DIR and prints its release (one line on
# stdout; progress goes to stderr). Bookworm's default 6.1 kernel has no ublk, so the kernel comes
# from bookworm-security's meta package linux-image-6.12-amd64, resolved on every call (the
# versioned package names, e.g. linux-image-6.12.117+deb12-amd64, vanish from the mirror).
#
# Result, for release R:
#   CACHE_DIR/R/vmlinuz
#   CACHE_DIR/R/vmlinux              the uncompressed ELF kernel, when zstd (or xz/gzip, whichever the
#                                    kernel uses) can unpack it: qemu boots it directly (PVH), which
#                                    skips ~2 s of in-guest decompression under TCG
#   CACHE_DIR/R/modules/NAME.ko      the wanted modules and everything they depend on, decompressed
#                                    (busybox insmod would first hand the .ko.xz to the kernel,
#                                    which logs "Invalid ELF header magic" before it falls back)
#   CACHE_DIR/R/modules.load         module names in load (dependency) order, one per line
#   CACHE_DIR/R/stamp                "format=N PACKAGE VERSION MODULES...": a matching stamp means done
#
# Idempotent: when the stamp matches the resolved package version and module list nothing is
# downloaded. The .deb (~107 MB) is deleted after extraction. apt-get update runs only when the
# meta package cannot be resolved; without network, an already extracted kernel is reused.
#
# Environment:
#   CBT_VM_KERNEL_META  meta package (default linux-image-6.12-amd64; the -cloud- flavour has no 9p)
#   CBT_VM_MODULES      extra module names to add to the default set (space separated)
set -euo pipefail

log() { echo "fetch-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 1 ] || { echo "usage: $0 CACHE_DIR" >&2; exit 2; }
cache=$1
meta=${CBT_VM_KERNEL_META:-linux-image-6.12-amd64}
# ublk_drv: the point of it all. loop: loop devices for tests. ext4: file systems on test devices;
# it also needs the crc32c crypto driver, which it requests at mount time (not a depends=; there is
# no modprobe in the guest), so crc32c_generic is listed explicitly. 9p + 9pnet_virtio: the host
# root and the work tree. dm_mod: device-mapper, to make a tracked device fail or vanish on demand
# (the fault scenarios). The known dependencies (netfs, 9pnet, jbd2, mbcache, crc16) are listed
# too, so that a single pass over the package normally suffices; any dependency a newer kernel adds
# is found from the modules' own depends= and fetched as well.
modules="ublk_drv loop dm_mod netfs 9pnet 9pnet_virtio 9p crc16 crc32c_generic mbcache jbd2 ext4 ${CBT_VM_MODULES:-}"

mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)
exec 9>"$cache/.lock"
flock 9

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi

# Prints "PACKAGE VERSION" for the versioned kernel package the meta package depends on, or
# nothing. Debian's meta package pins it ("Depends: linux-image-R (= V)"). Each apt-cache call costs
# ~1 s here (no pkgcache.bin), so the answer is kept until the apt lists change.
resolve() {
  local key line pkg ver
  key="$meta $(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)"
  if [ -f "$cache/resolved" ] && [ "$(sed -n 1p "$cache/resolved")" = "$key" ]; then
    sed -n 2p "$cache/resolved"
    return
  fi
  line=$(apt-cache show --no-all-versions "$meta" 2>/dev/null | sed -n 's/^Depends: //p' | head -n 1)
  # First alternative that is a linux-image-*: "linux-image-R (= V)".
  read -r pkg ver <<< "$(echo "$line" | tr ',|' '\n\n' |
    sed -n 's/^ *\(linux-image-[^ ]*\)\( (= \([^)]*\))\)\{0,1\}.*/\1 \3/p' | head -n 1)"
  [ -n "$pkg" ] || return 0
  if [ -z "$ver" ]; then
    ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
  fi
  [ -n "$ver" ] || return 0
  printf '%s\n%s %s\n' "$key" "$pkg" "$ver" > "$cache/resolved"
  echo "$pkg $ver"
}

# Newest already extracted kernel (by stamp time), for offline use.
cached_release() {
  local s
  s=$(ls -1t "$cache"/*/stamp 2>/dev/null | head -n 1) || true
  [ -n "$s" ] && [ -f "$(dirname "$s")/vmlinuz" ] && basename "$(dirname "$s")"
}

resolved=$(resolve)
if [ -z "$resolved" ]; then
  log "$meta not resolvable; running apt-get update"
  if ! $sudo apt-get update -qq >&2; then
    rel=$(cached_release) || true
    [ -n "$rel" ] || die "apt-get update failed and no kernel is cached in $cache"
    log "warning: apt-get update failed; using cached kernel $rel"
    echo "$rel"
    exit 0
  fi
  resolved=$(resolve)
  [ -n "$resolved" ] || die "$meta has no linux-image-* dependency (is bookworm-security in the apt sources?)"
fi
read -r pkg version <<< "$resolved"
rel=${pkg#linux-image-}   # 6.12.117+deb12-amd64: Debian names the package after the release
norm() { echo "$1" | tr '-' '_'; }
wanted=$(for m in $modules; do norm "$m"; done | sort -u | tr '\n' ' ')
wanted=${wanted% }
stamp="format=3 $pkg $version $wanted"

dest="$cache/$rel"
if [ -f "$dest/stamp" ] && [ "$(cat "$dest/stamp")" = "$stamp" ] && [ -f "$dest/vmlinuz" ]; then
  echo "$rel"
  exit 0
fi

stage=$(mktemp -d "$cache/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
log "downloading $pkg $version"
apt_opts=(-qq)
# As root apt would try to drop to _apt, which cannot write here (harmless warning); stay root.
if [ "$(id -u)" -eq 0 ]; then apt_opts+=(-o APT::Sandbox::User=root); fi
(cd "$stage" && apt-get "${apt_opts[@]}" download "$pkg=$version" >&2) ||
  die "apt-get download $pkg=$version failed"
deb=$(ls "$stage"/*.deb)

# Module file names may use '-' where the module name has '_' (and vice versa): match both.
pattern() { echo "*/$(echo "$1" | sed 's/[-_]/[-_]/g').ko.xz"; }
unxz_to() {
  if command -v xz >/dev/null; then xz -dc "$1" > "$2"; else busybox xz -dc "$1" > "$2"; fi
}
extract() { dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$stage/x" --wildcards "$@"; }

mkdir -p "$stage/x" "$stage/out/modules"
have=" "
todo=$wanted
first=1
for round in 1 2 3 4 5 6; do
  [ -n "${todo// /}" ] || break
  patterns=()
  for m in $todo; do patterns+=("$(pattern "$m")"); done
  if [ $first = 1 ]; then patterns+=('./boot/vmlinuz-*'); first=0; fi
  log "extracting (pass $round): $todo"
  extract "${patterns[@]}" || die "module(s) missing from $pkg: $todo"
  deps_all=""
  for m in $todo; do
    f=$(find "$stage/x" -name "$(echo "$m" | sed 's/[-_]/[-_]/g').ko.xz" | head -n 1)
    [ -n "$f" ] || die "module $m not found in $pkg"
    unxz_to "$f" "$stage/out/modules/$m.ko"
    have="$have$m "
    deps=$(tr '\0' '\n' < "$stage/out/modules/$m.ko" | sed -n 's/^depends=//p' | tr ',' ' ')
    echo "$deps" > "$stage/out/modules/$m.deps"
    deps_all="$deps_all $deps"
  done
  todo=""
  for d in $deps_all; do
    d=$(norm "$d")
    case "$have$todo " in *" $d "*) ;; *) todo="$todo $d" ;; esac
  done
done
[ -z "${todo// /}" ] || die "module dependencies did not converge: $todo"

vmlinuz=$(ls "$stage"/x/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $pkg"
[ "$(basename "$vmlinuz")" = "vmlinuz-$rel" ] || die "unexpected kernel image $(basename "$vmlinuz") in $pkg"
mv "$vmlinuz" "$stage/out/vmlinuz"

# The uncompressed kernel, found the way the kernel's scripts/extract-vmlinux does: try each
# compressed-stream signature in the bzImage until one unpacks to an ELF file.
try_unpack() {  # SIGNATURE(grep -P) TOOL...
  local sig=$1 off
  shift
  command -v "$1" >/dev/null || return 1
  for off in $(LC_ALL=C grep -obUaP "$sig" "$stage/out/vmlinuz" | cut -d: -f1); do
    tail -c +$((off + 1)) "$stage/out/vmlinuz" | "$@" > "$stage/vmlinux" 2>/dev/null
    if [ "$(head -c 4 "$stage/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
      mv "$stage/vmlinux" "$stage/out/vmlinux"
      return 0
    fi
  done
  return 1
}
try_unpack '\x28\xb5\x2f\xfd' zstd -dcq ||
  try_unpack '\xfd7zXZ\x00' xz -dcq ||
  try_unpack '\x1f\x8b\x08' gzip -dcq ||
  log "note: could not unpack vmlinux from the bzImage (zstd missing?); booting the bzImage instead"

# Load order: depth-first, dependencies first.
order=" "
visit() {
  local m=$1 d
  case "$order" in *" $m "*) return ;; esac
  for d in $(cat "$stage/out/modules/$m.deps"); do visit "$(norm "$d")"; done
  order="$order$m "
}
for m in $wanted; do visit "$m"; done
for m in $order; do echo "$m"; done > "$stage/out/modules.load"
rm -f "$stage"/out/modules/*.deps
echo "$stamp" > "$stage/out/stamp"

rm -rf "$dest"
mv "$stage/out" "$dest"
log "kernel $rel ready in $dest ($(wc -l < "$dest/modules.load") modules)"
echo "$rel"
