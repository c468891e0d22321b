#!/usr/bin/env bash
# A 64 GiB mostly-empty source (nbdkit data plugin) hydrates without transferring its holes:
# bytes_copied (from --json) is only the data, and the data lands where it belongs.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-clone.sh"
requires nbdkit

sock=$T/src.sock
clone_nbdkit "$sock" "$T/nbdkit.pid" data size=64G \
  data='@0 1 2 3 @1073741824 ( 0x55 0xaa 1 2 3 4 5 6 )*131072 @34359738368 ( "ferry" )*1000 @68719476000 9 9 9'
src="nbd+unix:///?socket=$sock"
data_bytes=$((32768 + 1048576 + 32768 + 32768))   # the source's data extents

"$FERRY" hydrate --source "$src" --map "$T/map" --json "$T/dst" >"$T/run1.json"
[ "$(json_get "$T/run1.json" state)" = converged ] || fail "not converged"
[ "$(json_get "$T/run1.json" regions_hydrated)" = 1048576 ] || fail "regions"
copied=$(json_get "$T/run1.json" bytes_copied)
skipped=$(json_get "$T/run1.json" bytes_skipped)
echo "copied $copied skipped $skipped"
[ "$copied" -le "$data_bytes" ] || fail "copied $copied bytes, more than the $data_bytes of data"
[ "$copied" -ge $((1048576)) ] || fail "copied only $copied bytes"
# bytes_skipped counts only the regions marked without a byte transferred: all but the 19
# regions that hold data (1 at 0, 16 at 1 GiB, 1 at 32 GiB, the last one).
[ "$skipped" -eq $(((1048576 - 19) * 65536)) ] || fail "skipped $skipped: not the 1048557 empty regions"
[ $((copied + skipped)) -le $((64 << 30)) ] || fail "copied + skipped exceed the volume"
[ "$(stat -c %s "$T/dst")" = $((64 << 30)) ] || fail "destination size"
alloc_kb=$(du -k "$T/dst" | cut -f1)
[ "$alloc_kb" -lt 4096 ] || fail "destination is not sparse: $alloc_kb KiB allocated"

# The bytes: every data extent and some hole offsets, source vs destination.
/usr/bin/python3 - "$sock" "$T/dst" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_unix(sys.argv[1])
f = open(sys.argv[2], "rb")
for off, n in [(0, 32768), (1073741824 - 4096, 1048576 + 8192), (34359738368, 32768),
               (68719443968, 32768), (5 << 30, 65536), (60 << 30, 4096)]:
    f.seek(off)
    if h.pread(n, off) != f.read(n):
        sys.exit("destination differs from the source at %d+%d" % (off, n))
print("data and holes match")
PY

# Converged: a second run copies nothing.
"$FERRY" hydrate --source "$src" --map "$T/map" --json "$T/dst" >"$T/run2.json"
[ "$(json_get "$T/run2.json" bytes_copied)" = 0 ] || fail "second run copied data"
[ "$(json_get "$T/run2.json" bytes_skipped)" = 0 ] || fail "second run zeroed again"
echo "sparse hydration ok"
