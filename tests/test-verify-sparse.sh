#!/usr/bin/env bash
# ferry verify on 64 GiB sparse volumes: holes on both sides are compared from extents,
# without reading them, so equal volumes, a difference at 50 GiB and a digest all come back
# at once.
. "$TESTS_DIR/functions.sh"

for f in a b; do
  truncate -s 64G "$T/$f.img"
  for off in 0 $((1 << 30)) $((33 << 30)) $(((64 << 30) - 4096)); do
    printf 'block at %d' $off | dd of="$T/$f.img" bs=1 seek=$off conv=notrunc status=none
  done
done
"$FERRY" verify --json "$T/a.img" "$T/b.img" >"$T/j" || fail "equal 64 GiB volumes"
/usr/bin/python3 - "$T/j" <<'PY' || fail "json"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["equal"] and j["a"]["digest"] == j["b"]["digest"], j
# Only the four 1 MiB blocks holding data were read, on each side.
assert j["a"]["bytes_read"] == j["b"]["bytes_read"] == 4 << 20, j
assert j["a"]["bytes_skipped"] == (64 << 30) - (4 << 20), j
PY
printf 'X' | dd of="$T/b.img" bs=1 seek=$((50 << 30)) conv=notrunc status=none
rc=0
"$FERRY" verify "$T/a.img" "$T/b.img" >"$T/out" || rc=$?
[ $rc -eq 1 ] || fail "one byte at 50 GiB: exit $rc"
grep -qx "differ: offset $((50 << 30)), 1 byte" "$T/out" || fail "$(cat "$T/out")"
# Zero blocks found by reading hash like holes: nbdkit's memory plugin (read as data) equals an
# empty sparse file.
if command -v nbdkit >/dev/null; then
  truncate -s 64M "$T/z.img"
  nbdkit -U "$T/sock" -P "$T/pid" --exit-with-parent memory 64M &
  track_pid $!
  wait_for_pidfile "$T/pid" >/dev/null
  "$FERRY" verify -q "nbd+unix:///?socket=$T/sock" "$T/z.img" || fail "zero volumes differ"
fi
echo "verify sparse ok"
