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

# A filesystem mounted on our loop device: SIGTERM must not pull the disk from under it.
# ferry-fuse warns, keeps serving until the filesystem is unmounted, then exits 0 and the
# data written through ext4 -> loop -> FUSE is in the image.
if command -v mkfs.ext4 >/dev/null; then
  truncate -s 32M "$T/ext4.img"
  mkfs.ext4 -q -F "$T/ext4.img"
  mkdir -p "$T/fsmnt"
  fuse_start "$MNT" --loop "$T/ext4.img"
  dev=$(cat "$FUSE_OUT")
  mount "$dev" "$T/fsmnt"
  cleanup "umount '$T/fsmnt' 2>/dev/null"
  head -c 123456 /dev/urandom >"$T/payload"
  cp "$T/payload" "$T/fsmnt/payload"
  kill -TERM "$FUSE_PID"
  for ((i = 0; i < 200; i++)); do grep -q "still in use" "$FUSE_ERR" && break; sleep 0.05; done
  grep -q "warning: $dev is still in use: it detaches when its last user closes it" "$FUSE_ERR" ||
    { cat "$FUSE_ERR" >&2; fail "no warning about the busy loop device"; }
  kill -0 "$FUSE_PID" || fail "ferry-fuse exited under a mounted filesystem"
  cmp "$T/fsmnt/payload" "$T/payload" || fail "filesystem on the loop device lost data"
  umount "$T/fsmnt"
  fuse_wait_exit
  fuse_assert_clean "$MNT"
  mkdir -p "$T/check"
  mount -o ro,loop "$T/ext4.img" "$T/check"
  cleanup "umount '$T/check' 2>/dev/null"
  cmp "$T/check/payload" "$T/payload" || fail "payload not in the image after shutdown"
  umount "$T/check"
fi

# No loop device: a plain fusermount3 -u unmounts and ferry-fuse exits 0.
fuse_start "$MNT" "$img"
fusermount3 -u "$MNT"
fuse_wait_exit
fuse_assert_clean "$MNT"
fuse_check_sanitizer_logs
echo "fuse loop ok"
