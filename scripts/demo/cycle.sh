#!/usr/bin/env bash
# cycle.sh AGENT CBTCTL — one complete incremental-backup cycle against the real kernel this
# runs on (root; blksnap or ublk_drv loaded), every step shown with cbtctl:
#   agent up -> attach a disk (a loop device with an ext4 file system on it) -> snapshot ->
#   full backup (copy the image) -> release -> change files -> snapshot -> changed extents ->
#   incremental backup (copy only those extents into the full one) -> the backup, mounted,
#   holds exactly the files of the second snapshot -> clean up.
# Started by scripts/demo/run (make demo), on the host or in the bundled qemu guest.
set -euo pipefail
AGENT=${1:?usage: $0 PATH/TO/cbt-agent PATH/TO/cbtctl}
CBTCTL=${2:?usage: $0 PATH/TO/cbt-agent PATH/TO/cbtctl}

work=$(mktemp -d /tmp/cbt-demo.XXXXXX)
sock=$work/agent.sock
agent_pid=""
loops=()
mounts=()
cleanup() {
  set +e
  for m in ${mounts[@]+"${mounts[@]}"}; do umount "$m" 2>/dev/null; done
  if [ -n "$agent_pid" ]; then kill -TERM "$agent_pid" 2>/dev/null; wait "$agent_pid" 2>/dev/null; fi
  for l in ${loops[@]+"${loops[@]}"}; do losetup -d "$l" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

bold=$'\e[1m' plain=$'\e[0m'
[ -t 1 ] || { bold=""; plain=""; }
n=0
step() { n=$((n + 1)); printf '\n%s[%d] %s%s\n' "$bold" "$n" "$*" "$plain"; }
# ctl ARGS...: runs cbtctl and shows the command line first.
ctl() { echo "\$ cbtctl $*"; "$CBTCTL" --address "unix:$sock" "$@"; }
json() { "$CBTCTL" --address "unix:$sock" --json "$@"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }

step "start the agent (backend: auto — blksnap if loaded, else ublk)"
"$AGENT" --listen "unix:$sock" --state_dir "$work/state" > "$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 300); do
  "$CBTCTL" --address "unix:$sock" --timeout 2 health > /dev/null 2>&1 && break
  kill -0 "$agent_pid" 2> /dev/null || { cat "$work/agent.log"; exit 1; }
  sleep 0.1
done
ctl capabilities
# Diff storage: the agent accepts only allowed directories; by default the "diff" directory
# in its state directory.
diff=$work/state/diff
mkdir -p "$diff"

step "a 64 MiB disk to protect (loop device), attached to change tracking"
truncate -s 64M "$work/disk.img"
disk=$(losetup -f --show "$work/disk.img")
loops+=("$disk")
ctl attach "$disk"
io=$(json tracker "$disk" | jq -r '.io_path')
echo "applications use $io"

step "an ext4 file system on it, with some files"
mkfs.ext4 -q -b 4096 "$io"
mkdir "$work/mnt"
mount "$io" "$work/mnt"
mounts+=("$work/mnt")
for i in $(seq 1 8); do seq -f "file $i line %g" 1 40000 > "$work/mnt/file$i.txt"; done
sync
ls -l "$work/mnt" | tail -n +2
ctl cbt info "$disk"

step "snapshot 1 (the mounted file system is frozen for the take)"
id1=$(json snapshot create --diff-storage "$diff" --limit 32M "$disk" | jq -r '.snapshot.id')
ctl snapshot get "$id1"
image=$(json snapshot get "$id1" | jq -r '.devices[0].image_path')
read -r gen1 k1 < <(json cbt info "$disk" | jq -r '"\(.generation_id) \(.changes_number // 0)"')

step "full backup: copy the whole image $image"
dd if="$image" of="$work/backup.img" bs=1M status=none
echo "copied $(mib "$(stat -c %s "$work/backup.img")"); recorded generation $gen1, changes number $k1"
ctl snapshot release "$id1"

step "the application changes data: one file appended, one replaced, one new"
seq -f "appended line %g" 1 2000 >> "$work/mnt/file2.txt"
seq -f "replaced line %g" 1 30000 > "$work/mnt/file5.txt"
seq -f "new file line %g" 1 10000 > "$work/mnt/new.txt"
sync

step "snapshot 2 and the blocks changed since the full backup"
id2=$(json snapshot create --diff-storage "$diff" --limit 32M "$disk" | jq -r '.snapshot.id')
image=$(json snapshot get "$id2" | jq -r '.devices[0].image_path')
ctl cbt extents "$disk" --base-generation "$gen1" --base-changes "$k1"

step "incremental backup: copy only the changed extents from image $image into the full backup"
count=0 bytes=0
while read -r off len; do
  dd if="$image" of="$work/backup.img" bs=4096 skip=$((off / 4096)) seek=$((off / 4096)) \
    count=$((len / 4096)) conv=notrunc status=none
  count=$((count + 1)) bytes=$((bytes + len))
done < <(json cbt extents "$disk" --base-generation "$gen1" --base-changes "$k1" |
         jq -r '.extents[]? | "\(.offset // 0) \(.length)"')
echo "copied $count extents, $(mib $bytes) of $(mib $((64 << 20))) ($((bytes * 100 / (64 << 20)))%)"

step "check: the backup equals snapshot 2, and mounted it holds the same files"
want=$(md5sum < "$image" | cut -d' ' -f1)
got=$(md5sum < "$work/backup.img" | cut -d' ' -f1)
echo "image md5 $want, backup md5 $got"
[ "$want" = "$got" ] || { echo "MISMATCH"; exit 1; }
mkdir "$work/restored"
restored=$(losetup -f --show -r "$work/backup.img")
loops+=("$restored")
mount -o ro,noload "$restored" "$work/restored"
mounts=("$work/restored" "${mounts[@]}")
(cd "$work/mnt" && md5sum -- *.txt) > "$work/live.md5"
(cd "$work/restored" && md5sum -c --quiet "$work/live.md5") && echo "all $(wc -l < "$work/live.md5") files match"
umount "$work/restored"
mounts=("$work/mnt")

step "clean up: release, unmount, detach, stop"
ctl snapshot release "$id2"
umount "$work/mnt"
mounts=()
ctl detach "$disk"
kill -TERM "$agent_pid"
wait "$agent_pid"
agent_pid=""
echo
echo "${bold}demo complete: full backup, writes, incremental with $count extents ($(mib $bytes)), verified.${plain}"
