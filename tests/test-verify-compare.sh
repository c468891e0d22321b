#!/usr/bin/env bash
# ferry verify A B: equal volumes (exit 0, both digests, nothing listed), volumes one byte
# apart (exit 1, that byte's range), several ranges merged and listed in order, different
# sizes, allocation that differs but bytes that do not (a hole against written zeroes: equal,
# same digest), --digest / --expect for two sites, --json, across drivers (nbd, zst), and the
# exit statuses for bad usage (2) and an unreadable volume (3).
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-zst.sh"
requires nbdkit

make_mixed "$T/a.img" 12
cp --sparse=never "$T/a.img" "$T/b.img" # same bytes, holes written as zeroes
SIZE=$(stat -c %s "$T/a.img")

"$FERRY" verify "$T/a.img" "$T/b.img" >"$T/out" || fail "equal volumes: exit $?"
D=$(head -1 "$T/out" | cut -d' ' -f1)
[[ $D =~ ^sha256/1M:[0-9a-f]{64}$ ]] || fail "digest: $D"
[ "$(sed -n 2p "$T/out")" = "$D  $T/b.img" ] || fail "a hole and written zeroes differ: $(cat "$T/out")"
grep -q "^identical: " "$T/out" || fail "no verdict: $(cat "$T/out")"
grep -q "^differ" "$T/out" && fail "ranges listed for equal volumes"

# One byte apart.
cp "$T/a.img" "$T/c.img"
printf '\x5a' | dd of="$T/c.img" bs=1 seek=3333333 conv=notrunc status=none
[ "$(dd if="$T/a.img" bs=1 skip=3333333 count=1 status=none | xxd -p)" != 5a ] || fail "setup"
rc=0
"$FERRY" verify "$T/a.img" "$T/c.img" >"$T/out" || rc=$?
[ $rc -eq 1 ] || fail "one byte apart: exit $rc"
grep -qx "differ: offset 3333333, 1 byte" "$T/out" || fail "range: $(cat "$T/out")"
grep -qx "$T/a.img and $T/c.img differ: 1 byte in 1 range" "$T/out" || fail "$(cat "$T/out")"
[ "$(sed -n 2p "$T/out" | cut -d' ' -f1)" != "$D" ] || fail "digests of different volumes equal"

# Several ranges, one across a block boundary, listed in order; --max-ranges cuts the list.
cp "$T/a.img" "$T/d.img"
/usr/bin/python3 - "$T/d.img" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    for off, n in ((5, 3), (1048570, 12), (9000000, 1)):
        f.seek(off); old = f.read(n); f.seek(off)
        f.write(bytes(b ^ 0xff for b in old))
PY
rc=0
"$FERRY" verify "$T/a.img" "$T/d.img" >"$T/out" || rc=$?
[ $rc -eq 1 ] || fail "ranges: exit $rc"
[ "$(grep '^differ' "$T/out")" = "differ: offset 5, 3 bytes
differ: offset 1048570, 12 bytes
differ: offset 9000000, 1 byte" ] || fail "ranges: $(cat "$T/out")"
"$FERRY" verify --max-ranges 1 "$T/a.img" "$T/d.img" >"$T/out" || true
grep -qx "... and 2 more ranges" "$T/out" || fail "--max-ranges: $(cat "$T/out")"
grep -qx "$T/a.img and $T/d.img differ: 16 bytes in 3 ranges" "$T/out" || fail "$(cat "$T/out")"

# Sizes differ: the tail of the longer one is a range.
cp "$T/a.img" "$T/e.img"
truncate -s $((SIZE + 1000)) "$T/e.img"
rc=0
"$FERRY" verify "$T/a.img" "$T/e.img" >"$T/out" || rc=$?
[ $rc -eq 1 ] || fail "sizes: exit $rc"
grep -qx "sizes differ: $T/a.img is $SIZE bytes, $T/e.img is $((SIZE + 1000)) bytes" "$T/out" ||
  fail "$(cat "$T/out")"
grep -qx "differ: offset $SIZE, 1000 bytes" "$T/out" || fail "tail: $(cat "$T/out")"

# Two sites: --digest here, --expect there.
[ "$("$FERRY" verify --digest "$T/a.img" "$T/c.img")" = "$D  $T/a.img
$(sed -n 2p <("$FERRY" verify "$T/a.img" "$T/c.img" || true) | cut -d' ' -f1)  $T/c.img" ] ||
  fail "--digest of two volumes"
"$FERRY" verify -q --expect "$D" "$T/b.img" || fail "--expect on an equal volume"
rc=0
"$FERRY" verify --expect "$D" "$T/c.img" >"$T/out" || rc=$?
[ $rc -eq 1 ] && grep -qF "$T/c.img differs from the digest expected ($D)" "$T/out" ||
  fail "--expect on a different volume: $rc $(cat "$T/out")"

# JSON.
"$FERRY" verify --json "$T/a.img" "$T/d.img" >"$T/j" || true
/usr/bin/python3 - "$T/j" "$D" <<'PY' || fail "json"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["equal"] is False and j["total_ranges"] == 3 and j["bytes_differing"] == 16, j
assert j["ranges"][1] == {"offset": 1048570, "length": 12}, j["ranges"]
assert j["a"]["digest"] == sys.argv[2] and j["a"]["bytes_skipped"] > 0, j["a"]
PY

# Across drivers: an NBD export and a seekable image of the same bytes.
start_nbdkit "$T/sock" file "$T/b.img"
"$FERRY" copy "$T/a.img" "$T/a.img.zst"
"$FERRY" verify -q "nbd+unix:///?socket=$T/sock" "$T/a.img.zst" || fail "nbd against zst"

# Exit statuses: bad usage 2, unreadable 3.
rc=0; "$FERRY" verify "$T/a.img" 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -qF "missing B (after A '$T/a.img')" "$T/err" || fail "one volume: $rc"
rc=0; "$FERRY" verify --expect nonsense "$T/a.img" 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -qF "is not a digest printed by ferry verify" "$T/err" || fail "--expect: $rc"
rc=0; "$FERRY" verify "$T/a.img" "$T/missing.img" 2>"$T/err" || rc=$?
[ $rc -eq 3 ] && grep -qF "$T/missing.img: No such file or directory" "$T/err" ||
  fail "missing volume: $rc $(cat "$T/err")"
echo "verify ok"
