#!/usr/bin/env bash
# The inspection scenario of issue 14: `ferry-fuse https://host/vm.img.zst MNT` on a
# compressed image in an image library (lighttpd on 127.0.0.1).  The disk's checksum equals
# the raw image; `mount -o ro,loop MNT/disk-p2` shows the ext4 partition and a file inside it
# reads back byte for byte.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
. "$TESTS_DIR/lib-fuse.sh"
. "$TESTS_DIR/lib-zst.sh"
requires lighttpd sgdisk mkfs.ext4

mkdir -p "$T/www" "$T/p2" "$T/fsmnt"
img="$T/vm.img"
truncate -s 48M "$img"
sgdisk -n1:2048:+4M -n2:0:+30M "$img" >/dev/null
p2=$(sgdisk -i2 "$img" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
head -c 2M /dev/urandom | dd of="$img" bs=512 seek=2048 conv=notrunc status=none
head -c 777777 /dev/urandom >"$T/p2/known.bin"
mkfs.ext4 -q -F -E offset=$((p2 * 512)) -d "$T/p2" "$img" 30M
"$FERRY" copy "$img" "$T/www/vm.img.zst"
[ "$(stat -c %s "$T/www/vm.img.zst")" -lt $((8 << 20)) ] || fail "image not compressed"
start_lighttpd "$T/www"
url="http://127.0.0.1:$HTTP_PORT/vm.img.zst"

MNT="$T/mnt"
fuse_start "$MNT" "$url"
cleanup "umount '$T/fsmnt' 2>/dev/null"
[ "$(sha "$MNT/disk")" = "$(sha "$img")" ] || fail "disk differs from the raw image"
[ "$(stat -c %a "$MNT/disk")" = 444 ] || fail "a compressed image must be served read-only"
ls "$MNT" | sort | tr '\n' ' ' | grep -qx "disk disk-p1 disk-p2 " || fail "listing: $(ls "$MNT")"
mount -o ro,loop "$MNT/disk-p2" "$T/fsmnt"
cmp "$T/fsmnt/known.bin" "$T/p2/known.bin" || fail "file inside the compressed image differs"
umount "$T/fsmnt"
fuse_stop "$MNT"
if losetup -a | grep -qF "$T/"; then losetup -a >&2; fail "a loop device over $T is left"; fi
fuse_check_sanitizer_logs
echo "fuse over a compressed image over http ok"
