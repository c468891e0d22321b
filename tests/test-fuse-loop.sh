#!/usr/bin/env bash
# ferry-fuse --loop: the daemon returns once ready and prints /dev/loopN, whose content is the
# volume; read-only mounts give read-only devices; SIGTERM and `fusermount3 -u -z` both detach
# the device and unmount; a plain `fusermount3 -u` unmounts a mount without loop device.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"

MNT="$T/mnt"
mkdir -p "$MNT"
img="$T/disk.img"
head -c $((8 << 20)) /dev/urandom >"$img"

# Daemon mode: usable at once, from a command substitution (stdout must not stay open).
pidf="$T/daemon.pid"
_fuse_mnts+=("$MNT")
dev=$("$FERRY_FUSE" --loop --pidfile "$pidf" "$img" "$MNT")
pid=$(cat "$pidf")
_fuse_pids+=("$pid")
[[ $dev == /dev/loop* ]] || fail "printed '$dev', not a loop device"
losetup -a | grep -qF "$dev: " || fail "$dev not attached"
cmp "$dev" "$img" || fail "$dev content differs from the volume"
[ "$(blockdev --getro "$dev")" = 0 ] || fail "$dev is read-only"
head -c 4096 /dev/urandom >"$T/w"
dd if="$T/w" of="$dev" bs=4096 seek=7 oflag=direct conv=notrunc,fsync status=none
dd if="$T/w" of="$img.expect" bs=4096 count=0 status=none
cp "$img" "$img.expect"; dd if="$T/w" of="$img.expect" bs=4096 seek=7 conv=notrunc status=none
# fusermount3 -u is refused while the loop device holds the disk; -z detaches lazily and
# ferry-fuse notices, detaches the loop device and exits.
if fusermount3 -u "$MNT" 2>/dev/null; then fail "fusermount3 -u succeeded under a loop device"; fi
fusermount3 -u -z "$MNT"
for ((i = 0; i < 400; i++)); do [ -e "$pidf" ] || break; sleep 0.05; done
[ ! -e "$pidf" ] || fail "ferry-fuse still running after fusermount3 -u -z"
fuse_assert_clean "$MNT"
cmp "$img" "$img.expect" || fail "write through $dev lost"

# Read-only: the loop device is read-only; SIGTERM detaches it.
fuse_start "$MNT" --read-only --loop "$img"
dev=$(cat "$FUSE_OUT")
[ "$(blockdev --getro "$dev")" = 1 ] || fail "$dev is writable under --read-only"
cmp "$dev" "$img" || fail "$dev content differs"
fuse_stop "$MNT"

# No loop device: a plain fusermount3 -u unmounts and ferry-fuse exits 0.
fuse_start "$MNT" "$img"
fusermount3 -u "$MNT"
fuse_wait_exit
fuse_assert_clean "$MNT"
echo "fuse loop ok"
