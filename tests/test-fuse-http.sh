#!/usr/bin/env bash
# ferry-fuse over HTTP (lighttpd on 127.0.0.1, random port): the inspection scenario.  A GPT
# image with two ext4 partitions is served read-only; disk's checksum equals the image;
# `mount -o ro,loop MNT/disk-p2` shows a known file, read back and compared.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"
requires lighttpd sgdisk mkfs.ext4 curl

www="$T/www"
mkdir -p "$www" "$T/p1" "$T/p2" "$T/fsmnt"
img="$www/disk.img"
truncate -s 64M "$img"
sgdisk -n1:2048:+20M -n2:0:+30M "$img" >/dev/null
p1=$(sgdisk -i1 "$img" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
p2=$(sgdisk -i2 "$img" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
head -c 300000 /dev/urandom >"$T/p1/one.bin"
head -c 777777 /dev/urandom >"$T/p2/known.bin"
mkfs.ext4 -q -F -E offset=$((p1 * 512)) -d "$T/p1" "$img" 20M
mkfs.ext4 -q -F -E offset=$((p2 * 512)) -d "$T/p2" "$img" 30M

port=$(free_port)
cat >"$T/lighttpd.conf" <<CONF
server.document-root = "$www"
server.bind = "127.0.0.1"
server.port = $port
server.pid-file = "$T/lighttpd.pid"
server.errorlog = "$T/lighttpd.err"
CONF
lighttpd -D -f "$T/lighttpd.conf" &
track_pid $!
for ((i = 0; i < 200; i++)); do
  curl -fsI "http://127.0.0.1:$port/disk.img" >/dev/null 2>&1 && break
  sleep 0.05
done
url="http://127.0.0.1:$port/disk.img"
fuse_driver_ready "$url"

# The README scenario: ferry-fuse URL MNT (daemon), then mount the partition.
MNT="$T/mnt"
mkdir -p "$MNT"
pidf="$T/daemon.pid"
_fuse_mnts+=("$MNT")
"$FERRY_FUSE" --pidfile "$pidf" "$url" "$MNT"
_fuse_pids+=("$(cat "$pidf")")
cleanup "umount '$T/fsmnt' 2>/dev/null"
[ "$(sha "$MNT/disk")" = "$(sha "$img")" ] || fail "disk checksum differs from the HTTP source"
[ "$(stat -c %a "$MNT/disk")" = 444 ] || fail "an HTTP disk must be served read-only"
ls "$MNT" | sort | tr '\n' ' ' | grep -qx "disk disk-p1 disk-p2 " || fail "listing: $(ls "$MNT")"
mount -o ro,loop "$MNT/disk-p2" "$T/fsmnt"
cmp "$T/fsmnt/known.bin" "$T/p2/known.bin" || fail "known file read through HTTP differs"
umount "$T/fsmnt"
mount -o ro,loop "$MNT/disk-p1" "$T/fsmnt"
cmp "$T/fsmnt/one.bin" "$T/p1/one.bin" || fail "file in partition 1 differs"
umount "$T/fsmnt"
kill -TERM "$(cat "$pidf")"
for ((i = 0; i < 400; i++)); do [ -e "$pidf" ] || break; sleep 0.05; done
[ ! -e "$pidf" ] || fail "ferry-fuse still running after SIGTERM"
fuse_assert_clean "$MNT"
if losetup -a | grep -qF "$T/"; then losetup -a >&2; fail "a loop device over $T is left"; fi
fuse_check_sanitizer_logs
echo "fuse http ok"
