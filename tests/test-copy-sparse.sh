#!/usr/bin/env bash
# ferry copy file -> new file: byte-equal, the source's holes and zero runs are holes in the
# output, zero/hole extents are never read (the --json counts say what was read).
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-copy.sh"

make_image "$T/src.img" 48
read -r want_read want_zeroed < <(expected_counts "$T/src.img.map")

"$FERRY" copy --json "$T/src.img" "$T/out.img" >"$T/summary.json"
same_bytes "$T/src.img" "$T/out.img"
check_holes "$T/out.img" "$T/src.img.map" || fail "holes missing in out.img"

size=$(stat -c %s "$T/src.img")
[ "$(json_field "$T/summary.json" size)" = "$size" ] || fail "json size"
[ "$(json_field "$T/summary.json" bytes_read)" = "$want_read" ] ||
  fail "bytes_read $(json_field "$T/summary.json" bytes_read), want $want_read (holes were read?)"
[ "$(json_field "$T/summary.json" bytes_zeroed)" = "$want_zeroed" ] ||
  fail "bytes_zeroed $(json_field "$T/summary.json" bytes_zeroed), want $want_zeroed"
[ "$(json_field "$T/summary.json" bytes_written)" = $((size - want_zeroed)) ] || fail "bytes_written"
[ "$(json_field "$T/summary.json" source)" = "$T/src.img" ] || fail "json source"
[ "$(json_field "$T/summary.json" destination)" = "$T/out.img" ] || fail "json destination"

# Allocation: out.img holds no more blocks than the data it must (Z chunks and zero runs of the
# source are allocated there but must be holes here).
src_blocks=$(stat -c %b "$T/src.img")
out_blocks=$(stat -c %b "$T/out.img")
[ "$out_blocks" -lt "$src_blocks" ] || fail "out.img has $out_blocks blocks, source $src_blocks"

# Small requests, few workers, file:// URIs: same bytes.
"$FERRY" copy --requests 3 --request-size 64K "file://$T/src.img" "file://$T/out2.img"
same_bytes "$T/src.img" "$T/out2.img"
check_holes "$T/out2.img" "$T/src.img.map" || fail "holes missing in out2.img"

# --no-sparse: every byte read and written as data; the output is fully allocated.
"$FERRY" copy --no-sparse --json "$T/src.img" "$T/full.img" >"$T/full.json"
same_bytes "$T/src.img" "$T/full.img"
[ "$(json_field "$T/full.json" bytes_read)" = "$size" ] || fail "--no-sparse bytes_read"
[ "$(json_field "$T/full.json" bytes_zeroed)" = 0 ] || fail "--no-sparse bytes_zeroed"
/usr/bin/python3 -c 'import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); sys.exit(os.lseek(fd,0,os.SEEK_HOLE)!=os.fstat(fd).st_size)' "$T/full.img" ||
  fail "--no-sparse output has holes"

# An empty source makes an empty destination.
: >"$T/empty.img"
"$FERRY" copy "$T/empty.img" "$T/empty-out.img"
[ "$(stat -c %s "$T/empty-out.img")" = 0 ] || fail "empty copy"
echo "sparse copy ok"
