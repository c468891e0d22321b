#!/usr/bin/env bash
# Seekable zstd images: `ferry copy SRC DST.zst` is decompressed by zstd(1) to the exact raw
# disk; read back by ferry (whole, and at random through the seek table) byte for byte, holes
# kept; --compress zstd:LEVEL, stdout; seekable files made by another writer (zstd's frames
# and an independent seek table); plain .zst from zstd(1) read in order and refused for random
# access with how to make it seekable; raw: and zst: prefixes; a 64 GiB sparse volume.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
. "$TESTS_DIR/lib-zst.sh"

make_mixed "$T/src.img" 24
SIZE=$((24 * 1048576 + 12345))

# The acceptance line: zstd -d < out.img.zst | cmp - src.img.
"$FERRY" copy --json "$T/src.img" "$T/out.img.zst" >"$T/copy.json"
zstd -d <"$T/out.img.zst" | cmp - "$T/src.img" || fail "zstd -d output differs from the source"
zstd -tq "$T/out.img.zst" || fail "zstd -t"
/usr/bin/python3 - "$T/copy.json" "$T/out.img.zst" "$SIZE" <<'PY' || fail "copy --json"
import json, os, sys
j = json.load(open(sys.argv[1]))
assert j["size"] == int(sys.argv[3]), j
assert j["compressed_size"] == os.path.getsize(sys.argv[2]), j
assert j["bytes_zeroed"] > 0 and j["bytes_read"] < j["size"], j
PY
ls -a "$T" | grep -q '^\.out\.img\.zst\.' && fail "temporary file left beside the image"
# Frames of 1 MiB, the seek table with checksums; the last frame holds the tail.
zst_seek table "$T/out.img.zst" >"$T/table"
[ "$(wc -l <"$T/table")" = 25 ] || fail "25 frames expected: $(wc -l <"$T/table")"
[ "$(awk '$1 < 24 && $4 != 1048576' "$T/table" | wc -l)" = 0 ] || fail "frames not 1 MiB"
[ "$(awk '$1 == 24 {print $4}' "$T/table")" = 12345 ] || fail "tail frame"
# Chunk 0 is a hole: a tiny frame, reported as a hole by extents, never decompressed.
[ "$(awk '$1 == 0 {print $3}' "$T/table")" -lt 64 ] || fail "hole stored as a big frame"
"$VOLTOOL" extents "$T/out.img.zst" | head -1 | grep -q '^0 1048576 3$' || fail "extents: hole"

# Read back: whole (sparse: holes stay holes), and at random offsets.
"$FERRY" copy "$T/out.img.zst" "$T/back.img"
same_bytes "$T/src.img" "$T/back.img"
[ "$(du -k "$T/back.img" | cut -f1)" -lt "$(du -k --apparent-size "$T/back.img" | cut -f1)" ] ||
  fail "holes not kept"
for spec in "0 1" "1048575 2" "3000000 5000000" "$((SIZE - 100)) 100" "7340032 1048576"; do
  set -- $spec
  "$VOLTOOL" read "$T/out.img.zst" "$1" "$2" >"$T/piece"
  dd if="$T/src.img" of="$T/piece.ref" iflag=skip_bytes,count_bytes skip="$1" count="$2" \
    bs=1M status=none
  cmp "$T/piece" "$T/piece.ref" || fail "random read at $1+$2"
done
"$VOLTOOL" cat -t 8 -r 300K "$T/out.img.zst" >"$T/cat.img"
same_bytes "$T/src.img" "$T/cat.img"
"$FERRY" verify -q "$T/src.img" "$T/out.img.zst" || fail "verify raw against zst"

# --compress into any name, a level, and stdout.
"$FERRY" copy --compress zstd:9 "$T/src.img" "$T/level9"
zstd -dc "$T/level9" | cmp - "$T/src.img" || fail "--compress zstd:9"
"$FERRY" copy --compress zstd "$T/src.img" - >"$T/stdout.zst"
zstd -dc "$T/stdout.zst" | cmp - "$T/src.img" || fail "stdout image"
"$VOLTOOL" read "zst:$T/stdout.zst" 5000000 1000 | cmp - <(dd if="$T/src.img" \
  iflag=skip_bytes,count_bytes skip=5000000 count=1000 status=none) || fail "zst: prefix"
# raw: the .zst file's own bytes.
"$FERRY" copy "raw:$T/out.img.zst" "$T/raw-copy"
same_bytes "$T/out.img.zst" "$T/raw-copy"
expect_fail "--compress: 'gzip' is not a compression (use zstd or zstd:LEVEL)" \
  "$FERRY" copy --compress gzip "$T/src.img" "$T/x"
expect_fail "--compress: 'zstd:99': the zstd level must be -7..-1 or 1..22" \
  "$FERRY" copy --compress zstd:99 "$T/src.img" "$T/x"
expect_fail "DST '-' (stdout) needs --compress zstd" "$FERRY" copy "$T/src.img" -
expect_fail "nbd://h/x.zst: a compressed image is written to a local file or - (stdout)" \
  "$FERRY" copy "$T/src.img" nbd://h/x.zst
# A copy that fails leaves no image and no temporary file.
expect_fail "$T/nosuch" "$FERRY" copy "$T/nosuch" "$T/never.zst"
[ ! -e "$T/never.zst" ] || fail "failed copy left an image"

# Another writer's seekable file: zstd(1) frames of odd sizes, with and without checksums.
head -c 300000 "$T/src.img" | tail -c 200000 >"$T/p1"
dd if="$T/src.img" bs=1M skip=2 count=3 status=none >"$T/p2"
head -c 777 /dev/urandom >"$T/p3"
for i in 1 2 3; do zstd -q -c --no-check "$T/p$i" >"$T/f$i.zst"; done
cat "$T/p1" "$T/p2" "$T/p3" >"$T/parts"
for sums in 0 1; do
  zst_seek build "$T/other$sums.zst" $sums "$T/f1.zst" "$T/f2.zst" "$T/f3.zst"
  zstd -dc "$T/other$sums.zst" | cmp - "$T/parts" || fail "own test file is wrong"
  "$VOLTOOL" cat -t 4 -r 64K "$T/other$sums.zst" >"$T/other.out"
  cmp "$T/other.out" "$T/parts" || fail "reading another writer's seekable file (checksums $sums)"
  "$VOLTOOL" read "$T/other$sums.zst" 199990 20 | cmp - <(dd if="$T/parts" \
    iflag=skip_bytes,count_bytes skip=199990 count=20 status=none) || fail "across frames"
done

# Plain .zst from zstd(1): with its size in the header, and from a pipe (no size).
zstd -q -c "$T/src.img" >"$T/plain.zst"
zstd -q -c <"$T/src.img" >"$T/pipe.zst"
for z in plain pipe; do
  "$FERRY" copy "$T/$z.zst" "$T/$z.img"
  same_bytes "$T/src.img" "$T/$z.img"
  expect_fail "$T/$z.zst: no seek table at its end (a plain, non-seekable .zst, or a truncated image): random access needs one; make the image seekable with \`ferry copy $T/$z.zst IMAGE.zst\`" \
    "$VOLTOOL" read "$T/$z.zst" 0 1
done
# The advice works: the seekable copy reads at random.
"$FERRY" copy "$T/pipe.zst" "$T/seekable.zst"
"$VOLTOOL" read "$T/seekable.zst" 4000000 10 | cmp - <(dd if="$T/src.img" \
  iflag=skip_bytes,count_bytes skip=4000000 count=10 status=none) || fail "seekable copy"
"$FERRY" verify -q "$T/pipe.zst" "$T/src.img" || fail "verify reads a plain .zst in order"

# 64 GiB sparse: compressed without reading the holes, read back the same way.
truncate -s 64G "$T/big.img"
printf 'first' | dd of="$T/big.img" conv=notrunc status=none
printf 'middle' | dd of="$T/big.img" bs=1 seek=$((40 << 30)) conv=notrunc status=none
printf 'last' | dd of="$T/big.img" bs=1 seek=$(((64 << 30) - 4)) conv=notrunc status=none
"$FERRY" copy --json "$T/big.img" "$T/big.img.zst" >"$T/big.json"
[ "$(stat -c %s "$T/big.img.zst")" -lt $((4 << 20)) ] || fail "64 GiB of holes take too much"
grep -q '"bytes_read":12288,' "$T/big.json" || fail "holes were read: $(cat "$T/big.json")"
"$FERRY" copy "$T/big.img.zst" "$T/big.back"
[ "$(du -k "$T/big.back" | cut -f1)" -le 1024 ] || fail "holes not kept reading 64 GiB back"
"$FERRY" verify -q "$T/big.img" "$T/big.back" || fail "64 GiB copy differs"
"$FERRY" verify -q "$T/big.img" "$T/big.img.zst" || fail "64 GiB image differs"
[ "$("$VOLTOOL" read "$T/big.img.zst" $((40 << 30)) 6)" = middle ] || fail "read at 40 GiB"
echo "zst round trips ok"
