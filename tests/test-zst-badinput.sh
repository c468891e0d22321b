#!/usr/bin/env bash
# Bad zstd images: a truncated file, a corrupt frame, a seek table pointing past the end, a
# frame larger than announced (in its header, and one without a size in its header), a
# checksum mismatch, reserved bits, not zstd at all.  Each fails with a message naming the
# frame and its offsets: random reads (voltool), ferry copy (which leaves no destination
# behind) and NBD clients through ferry-nbd get an error, never wrong bytes.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
. "$TESTS_DIR/lib-nbd.sh"
. "$TESTS_DIR/lib-zst.sh"

make_mixed "$T/src.img" 8
"$FERRY" copy "$T/src.img" "$T/good.zst"
zst_seek table "$T/good.zst" >"$T/table"
# The first data frame of more than 100 KiB (chunk 1 is random data).
read -r K COFF CSIZE DSIZE SUM < <(awk '$3 > 100000' "$T/table" | head -1)
DOFF=$((K * 1048576))
FRAME="frame $K (image offset $DOFF, file offset $COFF)"

# bad NAME WHY: a random read of the damaged frame fails with "NAME.zst: frame K (...): WHY",
# and so does a copy of the whole image (not retried), which leaves nothing behind.
bad() {
  local f="$T/$1.zst" why=$2
  expect_fail "$f: $FRAME: $why" "$VOLTOOL" read "$f" "$DOFF" 4096
  expect_fail "$f: reading 1048576 bytes at offset $DOFF failed after 1 attempt: $FRAME: $why" \
    "$FERRY" copy "$f" "$T/$1.out"
  [ ! -e "$T/$1.out" ] || fail "$1: ferry copy left its destination"
}

# A corrupt frame: one byte flipped in its data (libzstd's content checksum catches it).
cp "$T/good.zst" "$T/corrupt.zst"
printf '\xff' | dd of="$T/corrupt.zst" bs=1 seek=$((COFF + CSIZE / 2)) conv=notrunc status=none
bad corrupt "checksum mismatch: the frame's data is corrupt"
# The neighbours still read: the damage is confined to its frame.
"$VOLTOOL" read "$T/corrupt.zst" 0 $DOFF | cmp - <(head -c $DOFF "$T/src.img") ||
  fail "frames before the corrupt one"

# Seek table checksum that does not match the data.
zst_seek patch "$T/good.zst" "$T/badsum.zst" "$K" checksum $((0x$SUM ^ 1))
bad badsum "checksum mismatch: the seek table says 0x$(printf %08x $((0x$SUM ^ 1))), the data has 0x$SUM"

# A frame larger than announced: its header says 1 MiB, the seek table a page less.
zst_seek patch "$T/good.zst" "$T/larger.zst" "$K" dsize $((DSIZE - 4096))
bad larger "its header says $DSIZE bytes, the seek table $((DSIZE - 4096))"
# ... and a frame that does not say its size (zstd --no-content-size): found decompressing.
dd if="$T/src.img" bs=1M skip=1 count=1 status=none >"$T/chunk"
zstd -q -c --no-content-size <"$T/chunk" >"$T/nosize.frame"
zst_seek build "$T/nosize-ok.zst" 0 "$T/nosize.frame"
"$VOLTOOL" read "$T/nosize-ok.zst" 0 1048576 | cmp - "$T/chunk" || fail "a frame without size"
zst_seek patch "$T/nosize-ok.zst" "$T/nosize.zst" 0 dsize 1000000
expect_fail "$T/nosize.zst: frame 0 (image offset 0, file offset 0): decompresses to more than the 1000000 bytes the seek table announces" \
  "$VOLTOOL" read "$T/nosize.zst" 0 1000000
# Compressed sizes that disagree with the frames: the sum is off, or one frame is said to be
# a byte shorter and the next a byte longer.
zst_seek patch "$T/good.zst" "$T/csize.zst" "$K" csize $((CSIZE - 1))
expect_fail "$T/csize.zst: the seek table's 9 frames end at offset $(($(stat -c %s "$T/good.zst") - 8 - 9 * 12 - 9 - 1)) but the seek table starts at" \
  "$VOLTOOL" info "$T/csize.zst"
NEXT=$(awk -v k=$((K + 1)) '$1 == k {print $3}' "$T/table")
zst_seek patch "$T/csize.zst" "$T/shifted.zst" $((K + 1)) csize $((NEXT + 1))
expect_fail "$T/shifted.zst: $FRAME: corrupt or cut short" "$VOLTOOL" read "$T/shifted.zst" $DOFF 1

# The seek table points past the end.
zst_seek patch "$T/good.zst" "$T/pastend.zst" "$K" csize 0x7fffffff
expect_fail "$T/pastend.zst: seek table entry $K: frame at offset $COFF of 2147483647 bytes ends past the end of the frames" \
  "$VOLTOOL" info "$T/pastend.zst"
expect_fail "ends past the end of the frames" "$FERRY" copy "$T/pastend.zst" "$T/pastend.out"
[ ! -e "$T/pastend.out" ] || fail "pastend: destination left"
# A seek table larger than the file.
/usr/bin/python3 - "$T/good.zst" "$T/huge.zst" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<I", d, len(d) - 9, 1 << 28)
open(sys.argv[2], "wb").write(d)
PY
expect_fail "$T/huge.zst: the seek table of 268435456 frames" "$VOLTOOL" info "$T/huge.zst"
# Reserved bits in the descriptor.
/usr/bin/python3 - "$T/good.zst" "$T/reserved.zst" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[-5] |= 0x04
open(sys.argv[2], "wb").write(d)
PY
expect_fail "$T/reserved.zst: seek table descriptor 0x84 has reserved bits set" \
  "$VOLTOOL" info "$T/reserved.zst"

# Truncated: the seek table is gone, so random access is refused with the advice; a copy
# walks the frames and names the one cut short.
SZ=$(stat -c %s "$T/good.zst")
head -c $((COFF + CSIZE / 2)) "$T/good.zst" >"$T/trunc.zst"
expect_fail "$T/trunc.zst: no seek table at its end (a plain, non-seekable .zst, or a truncated image)" \
  "$VOLTOOL" read "$T/trunc.zst" 0 1
expect_fail "$T/trunc.zst: truncated: frame $K at file offset $COFF ends inside a block (the file ends at $((COFF + CSIZE / 2)))" \
  "$FERRY" copy "$T/trunc.zst" "$T/trunc.out"
[ ! -e "$T/trunc.out" ] || fail "truncated: destination left"
# Cut inside the seek table itself.
head -c $((SZ - 20)) "$T/good.zst" >"$T/trunc2.zst"
expect_fail "$T/trunc2.zst: truncated: frame 9 at file offset" "$FERRY" copy "$T/trunc2.zst" "$T/t2"
# A plain stream cut short, and one with a corrupt byte: read in order, named by frame.
zstd -q -c <"$T/src.img" >"$T/plain.zst"
head -c 100000 "$T/plain.zst" >"$T/plain-trunc.zst"
expect_fail "$T/plain-trunc.zst: truncated: frame 0 at file offset 0" \
  "$FERRY" copy "$T/plain-trunc.zst" "$T/pt"
# Not zstd at all.
expect_fail "$T/src.img.zst: not a zstd file (starts with 0x" \
  bash -c "cp '$T/src.img' '$T/src.img.zst' && '$VOLTOOL' info '$T/src.img.zst'"

# Through ferry-nbd: a client reading the corrupt frame gets EIO, not bytes.
start_ferry_nbd "$T/sock" --read-only "$T/corrupt.zst"
expect_fail "" nbdcopy "$NBD_URI" "$T/nbd.out"
/usr/bin/python3 - "$T/sock" "$DOFF" "$T/src.img" <<'PY' || fail "nbd client saw wrong bytes"
import nbd, sys
h = nbd.NBD()
h.connect_unix(sys.argv[1])
off = int(sys.argv[2])
try:
    h.pread(4096, off)
    raise SystemExit("read of the corrupt frame succeeded")
except nbd.Error as e:
    assert e.errnum != 0, e
good = h.pread(4096, off - 4096)        # the frame before is fine
assert good == open(sys.argv[3], "rb").read()[off - 4096:off]
PY
stop_ferry_nbd
echo "zst bad input ok"
