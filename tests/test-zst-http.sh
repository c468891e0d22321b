#!/usr/bin/env bash
# A VM image in an image library as vm.img.zst over HTTP (lighttpd on 127.0.0.1): inspected
# with ferry-fuse (a file inside its ext4 partition read back), served by ferry-nbd, and cloned
# with `ferry-nbd --source http://.../vm.img.zst --map M dest.img` — read byte-exact through
# the clone while it hydrates, and the destination equal to the image once converged.  The
# layer also stacks on an NBD source (zst:nbd+unix://).
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
. "$TESTS_DIR/lib-nbd.sh"
. "$TESTS_DIR/lib-zst.sh"
requires lighttpd sgdisk mkfs.ext4 nbdcopy nbdinfo qemu-img

# The VM image: GPT, an ext4 partition holding a known file, random data elsewhere, holes.
mkdir -p "$T/www" "$T/p2"
img="$T/vm.img"
truncate -s 64M "$img"
sgdisk -n1:2048:+8M -n2:0:+40M "$img" >/dev/null
p2=$(sgdisk -i2 "$img" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
head -c 5M /dev/urandom >"$T/p1.data"
dd if="$T/p1.data" of="$img" bs=512 seek=2048 conv=notrunc status=none
head -c 3333333 /dev/urandom >"$T/p2/known.bin"
mkfs.ext4 -q -F -E offset=$((p2 * 512)) -d "$T/p2" "$img" 40M
"$FERRY" copy "$img" "$T/www/vm.img.zst"
start_lighttpd "$T/www"
URL="http://127.0.0.1:$HTTP_PORT/vm.img.zst"

# Random reads over HTTP through the seek table; the whole image through ferry copy.
"$VOLTOOL" info "$URL" | grep -qx 'driver: zst' || fail "not the zst layer"
"$VOLTOOL" read "$URL" $((p2 * 512 + 1024)) 1024 | cmp - <(dd if="$img" bs=1 \
  skip=$((p2 * 512 + 1024)) count=1024 status=none) || fail "ext4 superblock over HTTP"
"$FERRY" copy "$URL" "$T/copy.img"
same_bytes "$img" "$T/copy.img"
# Holes of the image are holes of the volume: only their few bytes travel.
nbd_free=$("$VOLTOOL" extents "$URL" | awk '$3 == 3 {s += $2} END {print s + 0}')
[ "$nbd_free" -ge $((8 << 20)) ] || fail "no holes reported over HTTP ($nbd_free bytes)"

# ferry-nbd serving the compressed image read-only: qemu-img compare against the raw image.
start_ferry_nbd "$T/serve.sock" "$URL"
qemu-img compare -f raw "$img" -F raw "$NBD_URI" >/dev/null || fail "qemu-img compare"
nbdinfo --map "$NBD_URI" | grep -q 'hole,zero' || fail "base:allocation shows no holes"
stop_ferry_nbd

# The clone: booting from the image library while it hydrates (throttled so the reads
# below really happen before convergence).
truncate -s 64M "$T/dest.img"
start_ferry_nbd "$T/clone.sock" --control "$T/ctl" --source "$URL" --map "$T/map" \
  --rate 4M --region-size 64K "$T/dest.img"
"$FERRY" status --json "$T/ctl" | grep -q '"state": *"hydrating"' || fail "not hydrating"
nbdcopy "$NBD_URI" "$T/through-clone.img"
same_bytes "$img" "$T/through-clone.img"
"$FERRY" set-rate "$T/ctl" 0 >/dev/null
"$FERRY" wait --timeout 120 "$T/ctl" >/dev/null || fail "ferry wait"
stop_ferry_nbd
same_bytes "$img" "$T/dest.img"

# The layer on an NBD source: the .zst file's bytes served by qemu-nbd, zst: on top.
start_qemu_nbd "$T/raw.sock" -r -f raw "$T/www/vm.img.zst"
"$FERRY" copy "zst:nbd+unix:///?socket=$T/raw.sock" "$T/from-nbd.img"
same_bytes "$img" "$T/from-nbd.img"
# qemu-nbd rounds the export up to 512 bytes: the zero padding after a plain stream too is
# not taken for a frame.
zstd -q -c "$img" >"$T/plain.zst"
start_qemu_nbd "$T/plain.sock" -r -f raw "$T/plain.zst"
"$FERRY" copy "zst:nbd+unix:///?socket=$T/plain.sock" "$T/plain-nbd.img"
same_bytes "$img" "$T/plain-nbd.img"
echo "zst over http and nbd ok"
