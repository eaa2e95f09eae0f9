# Shared by scripts/build-image and tests/image/check-image.sh (sourced, not executed).
#
# Everything podman needs is passed on its command line, so no file under /etc/containers is
# edited and the project's images live in their own store, apart from any other podman use:
#   CBT_IMAGE_DRIVER   storage driver: "auto" (default) takes overlay when the kernel can mount
#                      it on the store's filesystem, else vfs (works anywhere, needs no kernel
#                      support, but copies the whole root filesystem for every build step)
#   CBT_IMAGE_ROOT     image store            (default /var/lib/containers/cbt-agent/<driver>)
#   CBT_IMAGE_RUNROOT  podman's runtime state (default /run/containers/cbt-agent/<driver>)
# To look at the store by hand:  scripts/image/podman images   (same flags, any podman command)

CBT_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CBT_IMAGE_STORE_BASE="/var/lib/containers/cbt-agent"

# Can the kernel mount overlayfs with its upper layer on the store's filesystem? Tried in a
# private mount namespace, so nothing stays mounted whatever happens.
cbt_overlay_works() {
  [ "$(id -u)" -eq 0 ] || return 1
  grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null || return 1
  mkdir -p "$CBT_IMAGE_STORE_BASE" || return 1
  local d rc=0
  d="$(mktemp -d "$CBT_IMAGE_STORE_BASE/.overlay-probe.XXXXXX")" || return 1
  mkdir "$d/lower" "$d/upper" "$d/work" "$d/merged"
  unshare --mount --propagation private -- sh -c '
    mount -t overlay overlay -o "lowerdir=$1/lower,upperdir=$1/upper,workdir=$1/work" "$1/merged" &&
      touch "$1/merged/probe" && [ -f "$1/upper/probe" ]' probe "$d" >/dev/null 2>&1 || rc=1
  rm -rf "$d"
  return "$rc"
}

case "${CBT_IMAGE_DRIVER:-auto}" in
  auto) if cbt_overlay_works; then CBT_IMAGE_DRIVER=overlay; else CBT_IMAGE_DRIVER=vfs; fi ;;
  overlay|vfs) ;;
  *) echo "CBT_IMAGE_DRIVER must be auto, overlay or vfs, not '$CBT_IMAGE_DRIVER'" >&2; return 2 ;;
esac
# One store per driver: a podman store is bound to the driver that created it.
CBT_IMAGE_ROOT="${CBT_IMAGE_ROOT:-$CBT_IMAGE_STORE_BASE/$CBT_IMAGE_DRIVER}"
CBT_IMAGE_RUNROOT="${CBT_IMAGE_RUNROOT:-/run/containers/cbt-agent/$CBT_IMAGE_DRIVER}"
# Resolved once: the scripts this one's callers run see the same store without probing again.
export CBT_IMAGE_DRIVER CBT_IMAGE_ROOT CBT_IMAGE_RUNROOT
# The base images scripts/build-image makes with debootstrap (one image, two names).
CBT_BASE_SLIM="localhost/debian:bookworm-slim"
CBT_BASE_FULL="localhost/debian:bookworm"
# scripts/build-image keeps the Dockerfile's build stage under this tag, as a layer cache.
CBT_BUILD_CACHE_TAG="localhost/cbt-agent-build:cache"

# podman against the project's store. No systemd on the build machines, so cgroups are handled
# directly and events are not logged (chroot isolation creates no cgroups anyway).
cbt_podman() {
  command podman \
    --root "$CBT_IMAGE_ROOT" --runroot "$CBT_IMAGE_RUNROOT" --storage-driver "$CBT_IMAGE_DRIVER" \
    --cgroup-manager cgroupfs --events-backend none "$@"
}

# The project version, from `project(cbt-agent VERSION x.y.z ...)` in the top-level CMakeLists.txt:
# the daemon's --version prints the same number.
cbt_version() {
  sed -nE 's/^project\(cbt-agent[[:space:]]+VERSION[[:space:]]+([0-9][0-9A-Za-z.+~-]*).*/\1/p' \
    "$CBT_REPO_ROOT/CMakeLists.txt" | head -n1
}

# Default image reference for this checkout.
cbt_image_tag() { echo "localhost/cbt-agent:$(cbt_version)"; }

# Prints "<main-mirror> <security-mirror>": the Debian archive this machine's apt already uses
# (/etc/apt/sources.list and /etc/apt/sources.list.d/*.list|*.sources, both formats), so the
# image fetches packages from the same place the host does. CBT_DEBIAN_MIRROR and
# CBT_DEBIAN_SECURITY_MIRROR override; deb.debian.org is the fallback.
cbt_debian_mirrors() {
  local files=() f
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  local found=""
  if [ ${#files[@]} -gt 0 ]; then
    # Emits "suite uri" for every enabled binary ("deb") entry, one-line or deb822 format.
    found="$(awk '
      function flush() {
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^[ \t]*no/) {
          n = split(uris, u, /[ \t]+/); m = split(suites, s, /[ \t]+/)
          for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) if (u[i] != "" && s[j] != "") print s[j], u[i]
        }
        types = uris = suites = enabled = ""
      }
      FILENAME ~ /\.sources$/ {
        if (FILENAME != last) { flush(); last = FILENAME }
        if ($0 ~ /^[ \t]*#/) next
        if ($0 ~ /^[ \t]*$/) { flush(); next }
        line = $0; key = tolower(line); sub(/:.*/, "", key); sub(/^[^:]*:[ \t]*/, "", line)
        if (key == "types") types = line; else if (key == "uris") uris = line
        else if (key == "suites") suites = line; else if (key == "enabled") enabled = line
        next
      }
      {
        if (FILENAME != last) { flush(); last = FILENAME }
        if ($1 != "deb") next
        k = 2; if ($k ~ /^\[/) { while (k <= NF && $k !~ /\]$/) k++; k++ }
        print $(k + 1), $k
      }
      END { flush() }' "${files[@]}" 2>/dev/null || true)"
  fi
  local main security
  main="$(awk '$1 == "bookworm" && $2 ~ /^https?:\/\// { print $2; exit }' <<<"$found")"
  security="$(awk '$1 == "bookworm-security" && $2 ~ /^https?:\/\// { print $2; exit }' <<<"$found")"
  main="${CBT_DEBIAN_MIRROR:-${main:-http://deb.debian.org/debian}}"
  security="${CBT_DEBIAN_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security}}"
  echo "${main%/} ${security%/}"
}

# Wall-clock timing of the steps, for the summary lines.
cbt_now() { date +%s.%N; }
cbt_elapsed() { awk -v a="$1" -v b="$(cbt_now)" 'BEGIN { printf "%.1f s", b - a }'; }
