#!/usr/bin/env bash
# ferry demo with qemu: VM 42 boots the test guest from cluster A's export, checks its files
# and writes in a loop; its disk moves live to cluster B (ferry migrate --qmp, the VM never
# stopped); the demo verifies the source unchanged since the switch, e2fsck, a generated file,
# every write the guest acknowledged, the catalog edits; it prints ferry's pause and the
# guest's largest heartbeat gap.  Nothing is left running or on disk.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-guest.sh"
export PATH=$PATH:/usr/sbin:/sbin
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
export TMPDIR=$T
export FERRY_GUEST_KERNEL=$KERNEL FERRY_GUEST_INITRD=$INITRD FERRY_GUEST_ACCEL=$ACCEL

"$FERRY" demo --size 256M >"$T/out" 2>&1 || { cat "$T/out"; fail "ferry demo failed"; }
cat "$T/out" | grep -E '^  (VM|OK|FAIL)|guest paused|demo'
for check in "VM 42 web-01 RUNNING" "VM 42:     up in" "guest paused " \
  "OK   source unchanged since the switch: at the switch sha256/1M:" \
  "OK   e2fsck -fn destination: clean" \
  "OK   the guest's acknowledged writes on the destination: every one of them" \
  "OK   catalog XPaths read back: 16 of 16 edits" "demo OK: VM 42 moved live, never stopped"; do
  grep -qF -- "$check" "$T/out" || fail "demo output lacks: $check"
done
if grep -q FAIL "$T/out"; then fail "a verification failed"; fi
[ -z "$(ls -d "$T"/ferry-demo.* 2>/dev/null)" ] || fail "world left behind"
assert_no_process "$T/ferry-demo."

# --json: the live figures.
"$FERRY" demo --size 64M --json >"$T/out.json" 2>"$T/err" || { cat "$T/err"; fail "demo --json"; }
/usr/bin/python3 - "$T/out.json" <<'PY' || fail "demo JSON"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] is True and r["live"] is True, r
assert all(c["ok"] for c in r["checks"]) and len(r["checks"]) == 5, r["checks"]
assert r["writes_acknowledged"] > 0 and r["heartbeats"] >= 0, r
print("ferry paused %.3f s, largest heartbeat gap %.3f s" % (r["paused_seconds"], r["heartbeat_gap"]))
PY
assert_no_process "$T/ferry-demo."
echo "ok: the demo moved a running VM"
