#!/usr/bin/env bash
# ferry demo --no-vm (the near-live move of a stopped VM; test-demo-vm.sh boots the VM): the
# whole move on a throwaway world finishes, exit 0, prints the downtime and
# every verification; a 4G sparse disk shows a downtime of the same order as a 64M one.
. "$TESTS_DIR/functions.sh"
export PATH=$PATH:/usr/sbin:/sbin
requires mkfs.ext4 e2fsck debugfs
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
export TMPDIR=$T

downtime() { sed -nE 's/^downtime: ([0-9]+\.[0-9]+) s \(VM stopped -> first read served on the destination\)$/\1/p' "$1"; }

"$FERRY" demo --no-vm --size 64M > "$T/small" 2>&1 || { cat "$T/small"; fail "demo --size 64M failed"; }
d_small=$(downtime "$T/small")
[ -n "$d_small" ] || { cat "$T/small"; fail "no downtime line"; }
for check in "OK   verify: source sha256/1M:" "OK   e2fsck -fn destination: clean" \
  "OK   file read from the destination with debugfs: /srv/data/blob-003.bin: 1.0 MiB identical" \
  "OK   catalog XPaths read back: 16 of 16 edits hold their new value" "demo OK: downtime "; do
  grep -qF -- "$check" "$T/small" || { cat "$T/small"; fail "demo output lacks: $check"; }
done
grep -q FAIL "$T/small" && fail "a verification failed"
# The two digests printed are equal, and the move itself verified the destination before it
# renamed the source (the VM stayed down: ferry migrate's final check).
line=$(grep -F "OK   verify: source " "$T/small")
[[ $line =~ source\ sha256/1M:([0-9a-f]{64}),\ destination\ sha256/1M:([0-9a-f]{64})$ ]] ||
  fail "verify line: $line"
[ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] || fail "digests differ"
grep -qE "verified: disk 0 destination identical to the source \(sha256/1M:${BASH_REMATCH[1]}, " \
  "$T/small" || { cat "$T/small"; fail "the move did not verify the destination"; }
# The world is removed without --keep.
[ -z "$(ls -d "$T"/ferry-demo.* 2>/dev/null)" ] || fail "world left behind without --keep"

# 4G sparse: downtime of the same order (nothing is copied before the first read).
"$FERRY" demo --no-vm --size 4G --keep --json > "$T/big.json" 2>"$T/big.err" ||
  { cat "$T/big.err" "$T/big.json"; fail "demo --size 4G failed"; }
/usr/bin/python3 - "$T/big.json" "$d_small" <<'PY' || fail "4G demo JSON"
import json, sys
r = json.load(open(sys.argv[1]))
small = float(sys.argv[2])
assert r["ok"] is True, r
assert r["size"] == 4 << 30, r["size"]
assert all(c["ok"] for c in r["checks"]) and len(r["checks"]) == 4, r["checks"]
assert len(r["edits"]) == 16, len(r["edits"])
# Same order: at most 10x the 64M run plus 0.5 s of scheduling noise on a loaded machine.
assert r["downtime"] < 10 * small + 0.5, (r["downtime"], small)
print("downtime 64M %.3f s, 4G %.3f s" % (small, r["downtime"]))
PY
world=$(ls -d "$T"/ferry-demo.*) || fail "--keep did not keep the world"
[ -s "$world/journal.json" ] && [ -s "$world/journal.json.storage.json" ] || fail "kept world lacks journals"

# Bad usage is refused with the reason.
rc=0; "$FERRY" demo --size 1M 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -qF "ferry demo: --size 1M: must be a multiple of 4 KiB from 16M to 16T" "$T/err" ||
  fail "--size 1M not refused ($rc)"
rc=0; "$FERRY" demo --size lots 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -qF "ferry demo: --size: 'lots' is not a size" "$T/err" || fail "--size lots"
rc=0; "$FERRY" demo extra 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -qF "ferry demo: unexpected argument 'extra'" "$T/err" || fail "extra arg"
"$FERRY" demo --help | grep -q -- "--size SIZE" || fail "help"
echo "demo ok"
