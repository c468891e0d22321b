#!/usr/bin/env bash
# ferry copy with NBD volumes served by nbdkit on unix sockets: an nbd source (its holes come
# through base:allocation and are never read), an nbd destination (zeroes are really zeroed
# on an existing export full of garbage), sparse-random as a source with many extents.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-copy.sh"
requires nbdkit nbdcopy

make_image "$T/src.img" 40
read -r want_read want_zeroed < <(expected_counts "$T/src.img.map")
size=$(stat -c %s "$T/src.img")

# nbd source -> new file.
start_nbdkit "$T/src.sock" --readonly file "$T/src.img"
SRC="nbd+unix:///?socket=$T/src.sock"
"$FERRY" copy --json --connections 2 "$SRC" "$T/out.img" >"$T/summary.json"
same_bytes "$T/src.img" "$T/out.img"
check_holes "$T/out.img" "$T/src.img.map" || fail "holes missing in out.img"
[ "$(json_field "$T/summary.json" bytes_read)" = "$want_read" ] ||
  fail "bytes_read $(json_field "$T/summary.json" bytes_read), want $want_read (holes were read?)"
[ "$(json_field "$T/summary.json" bytes_zeroed)" = "$want_zeroed" ] || fail "bytes_zeroed"
[ "$(json_field "$T/summary.json" size)" = "$size" ] || fail "size"

# Small requests, many in flight, one connection; --no-sparse reads everything.
"$FERRY" copy --connections 1 --requests 32 --request-size 64K "$SRC" "$T/out2.img"
same_bytes "$T/src.img" "$T/out2.img"
"$FERRY" copy --no-sparse --json "$SRC" "$T/out3.img" >"$T/full.json"
same_bytes "$T/src.img" "$T/out3.img"
[ "$(json_field "$T/full.json" bytes_read)" = "$size" ] || fail "--no-sparse bytes_read"

# file -> nbd destination holding garbage: every byte, zero runs included, must match.
head -c "$size" /dev/urandom >"$T/dst.img"
start_nbdkit "$T/dst.sock" file "$T/dst.img"
"$FERRY" copy "$T/src.img" "nbd+unix:///?socket=$T/dst.sock"
same_bytes "$T/src.img" "$T/dst.img"

# nbd -> nbd: source export to an nbdkit memory export, read back with nbdcopy.
start_nbdkit "$T/mem.sock" memory size=$size
"$FERRY" copy "$SRC" "nbd+unix:///?socket=$T/mem.sock"
nbdcopy "nbd+unix:///?socket=$T/mem.sock" "$T/back.img"
same_bytes "$T/src.img" "$T/back.img"

# A source with many small extents: the same bytes nbdcopy gets.
start_nbdkit "$T/rnd.sock" --readonly sparse-random size=64M percent=30 runlength=65536 seed=7
"$FERRY" copy --json "nbd+unix:///?socket=$T/rnd.sock" "$T/rnd.img" >"$T/rnd.json"
nbdcopy "nbd+unix:///?socket=$T/rnd.sock" "$T/rnd-ref.img"
same_bytes "$T/rnd-ref.img" "$T/rnd.img"
[ "$(json_field "$T/rnd.json" bytes_read)" -lt $((64 << 20)) ] || fail "sparse-random holes were read"

# A destination export smaller than the source is refused, untouched.
start_nbdkit "$T/small.sock" memory size=1M
expect_rc 1 "destination is 1048576 bytes, smaller than the source ($size bytes)" \
  "$FERRY" copy "$SRC" "nbd+unix:///?socket=$T/small.sock"
echo "nbd copy ok"
