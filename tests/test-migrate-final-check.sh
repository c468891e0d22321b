#!/usr/bin/env bash
# ferry migrate's final check: the VM stays down (sqlite catalog: oned stopped), so the
# converged destination must equal the source.  A clone that converges with one wrong byte
# (a ferry-nbd fed a damaged copy of the source) fails the move before the source is renamed,
# naming the byte; the catalog switch is then undone by --rollback.  The good move prints the
# verified digest, the same as `ferry verify --digest` of the source.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
make_world
dump0=$(db_dump)

# The damaged clone: the real server, reading a copy of the source with a byte changed.
cp "$T/source.orig" "$T/damaged"
# A byte that differs for sure: the source is random, and a fixed value would be the source's
# own byte once in 256 runs (the move then rightly succeeds and the test failed).
old=$(od -An -tu1 -j1500000 -N1 "$T/source.orig" | tr -d ' ')
printf "\\x$(printf %02x $(((old + 1) % 256)))" | dd of="$T/damaged" bs=1 seek=1500000 conv=notrunc status=none
cmp -s "$T/damaged" "$T/source.orig" && fail "the damaged copy is not damaged"
cat >"$T/bad-nbd" <<SH
#!/usr/bin/env bash
a=("\$@")
for i in "\${!a[@]}"; do [ "\${a[i]}" = --source ] && a[i+1]=$T/damaged; done
exec "$FERRY_NBD" "\${a[@]}"
SH
chmod +x "$T/bad-nbd"
FERRY_NBD=$T/bad-nbd expect_fail \
  "disk 0: the destination $T/ds/100/42/disk.0 differs from the source $T/ds/0/42/disk.0: 1 byte in 1 range, the first at offset 1500000" \
  migrate --storage fs --datastores "$T/ds" --journal "$T/bad.json"
grep -qF "roll it back with ferry migrate --rollback" "$T/err" || fail "no rollback advice"
cmp "$T/ds/0/42/disk.0" "$T/source.orig" || fail "the source was touched"
[ -z "$(ls "$T/ds/0/42/" | grep MIGRATED)" ] || fail "the source was renamed after a failed check"
"$FERRY" migrate --rollback "$T/bad.json" --one-lock "$T/one.lock" >"$T/rb" 2>&1 ||
  { cat "$T/rb"; fail "rollback"; }
[ "$(db_dump)" = "$dump0" ] || fail "rollback did not restore the catalog"

# The good move: verified, with the source's digest.
rm -f "$T/ds/100/42/disk.0"
want=$("$FERRY" verify --digest "$T/source.orig" | cut -d' ' -f1)
migrate --storage fs --datastores "$T/ds" --journal "$T/j.json" >"$T/out" 2>&1 ||
  { cat "$T/out"; fail "migrate"; }
grep -qE "verified: disk 0 destination identical to the source \($want, " "$T/out" ||
  { cat "$T/out"; fail "no verification line"; }
cmp "$T/ds/100/42/disk.0" "$T/source.orig" || fail "destination differs"
echo "migrate final check ok"
