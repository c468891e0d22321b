#!/usr/bin/env bash
# ferry-fuse over a file: disk reads back the source, writes + fsync survive a remount,
# fallocate punch/zero read back as zeroes, partition files write where they belong,
# --read-only refuses writes, --no-direct-io serves the same bytes.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"
requires sgdisk python3

MNT="$T/mnt"
img="$T/disk.img"
truncate -s 24M "$img"
# Random data everywhere, then a GPT (so partition offsets matter).
dd if=/dev/urandom of="$img" bs=1M count=24 conv=notrunc status=none
sgdisk -Z "$img" >/dev/null 2>&1 || true
sgdisk -n1:2048:+8M -n2:0:+8M "$img" >/dev/null
cp "$img" "$T/expect"

fuse_start "$MNT" "$img"
[ "$(stat -c %s "$MNT/disk")" = $((24 << 20)) ] || fail "disk size $(stat -c %s "$MNT/disk")"
[ "$(sha "$MNT/disk")" = "$(sha "$img")" ] || fail "disk checksum differs from the source"
ls "$MNT" | sort | tr '\n' ' ' | grep -qx "disk disk-p1 disk-p2 " || fail "listing: $(ls "$MNT")"
[ "$(stat -c %s "$MNT/disk-p2")" = $((8 << 20)) ] || fail "disk-p2 size"
cmp <(dd if="$img" bs=512 skip=$((2048 + 16384)) count=16384 status=none) "$MNT/disk-p2" ||
  fail "disk-p2 is not the second partition's range"

# Writes at odd offsets and sizes, made durable with fsync, through disk and disk-p2.
head -c 100000 /dev/urandom >"$T/w1"
head -c 4096 /dev/urandom >"$T/w2"
dd if="$T/w1" of="$MNT/disk" bs=100000 seek=12345 oflag=seek_bytes conv=notrunc,fsync status=none
dd if="$T/w1" of="$T/expect" bs=100000 seek=12345 oflag=seek_bytes conv=notrunc status=none
dd if="$T/w2" of="$MNT/disk-p2" bs=4096 seek=3 conv=notrunc,fsync status=none
dd if="$T/w2" of="$T/expect" bs=4096 seek=$(((2048 + 16384) * 512 / 4096 + 3)) conv=notrunc status=none
# fallocate: punch and zero-range read back as zeroes; the source file really gets a hole.
fallocate -p -o $((2 << 20)) -l $((1 << 20)) "$MNT/disk"
fallocate -z -o $((5 << 20)) -l 65536 "$MNT/disk"
dd if=/dev/zero of="$T/expect" bs=1M seek=2 count=1 conv=notrunc status=none
dd if=/dev/zero of="$T/expect" bs=65536 seek=$((5 * 16)) count=1 conv=notrunc status=none
cmp "$MNT/disk" "$T/expect" || fail "disk differs after writes"
# Writing past the end is refused like on a block device.
if dd if="$T/w2" of="$MNT/disk" bs=4096 seek=$((24 << 8)) conv=notrunc status=none 2>"$T/err"; then
  fail "write past the end succeeded"
fi
grep -q "No space left on device" "$T/err" || fail "write past the end: $(cat "$T/err")"
fuse_stop "$MNT"
cmp "$img" "$T/expect" || fail "source file differs after unmount"
alloc=$(/usr/bin/python3 -c 'import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); print(os.lseek(fd,2<<20,os.SEEK_DATA))' "$img")
[ "$alloc" -ge $((3 << 20)) ] || fail "punched range still allocated (next data at $alloc)"

# Remount: the data is still there; --read-only refuses writes; --no-direct-io reads the same.
fuse_start "$MNT" --read-only --no-direct-io "$img"
cmp "$MNT/disk" "$T/expect" || fail "disk differs after remount"
[ "$(stat -c %a "$MNT/disk")" = 444 ] || fail "read-only mode bits $(stat -c %a "$MNT/disk")"
if dd if="$T/w2" of="$MNT/disk" bs=4096 conv=notrunc status=none 2>"$T/err"; then
  fail "write to a read-only mount succeeded"
fi
grep -q "Read-only file system" "$T/err" || fail "read-only refusal: $(cat "$T/err")"
fuse_stop "$MNT"
cmp "$img" "$T/expect" || fail "read-only mount changed the source"
fuse_check_sanitizer_logs
echo "fuse file ok"
