#!/usr/bin/env bash
# A RUNNING VM moved through a running oned's XML-RPC API with --storage fs: ferry undeploys it
# with one.vm.action, switches the catalog with one.system.sql, resumes it.  oned cannot run
# here: tests/one_xmlrpc_responder.py implements exactly the calls used, over a real SQLite
# catalog, and logs the VM actions it receives.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
make_world
sqlite3 "$T/one.db" "UPDATE vm_pool SET state = 3, lcm_state = 3 WHERE oid = 42"  # RUNNING
/usr/bin/python3 "$TESTS_DIR/one_xmlrpc_responder.py" "$T/one.db" "$T/port" oneadmin:pw \
  --action-log "$T/actions" &
track_pid $!
wait_for_file "$T/port"
uri="xmlrpc://127.0.0.1:$(cat "$T/port")/RPC2"

"$FERRY" migrate --catalog "$uri" --auth oneadmin:pw --vm 42 --to-cluster 100 --storage fs \
  --datastores "$T/ds" --journal "$T/j.json" > "$T/out" 2>&1 || { cat "$T/out"; fail "move failed"; }
[ "$(cat "$T/actions")" = "undeploy 42
resume 42" ] || { cat "$T/actions"; fail "expected one.vm.action undeploy then resume"; }
wait_vm_state 42 3/3 || fail "VM not RUNNING again"
cmp "$T/ds/100/42/disk.0" "$T/source.orig" || fail "destination differs from the source"
[ "$(xpath 'SELECT body FROM history WHERE vid=42 AND seq=1' ./DS_ID)" = 100 ] || fail "history DS_ID"
[ "$(xpath 'SELECT body FROM history WHERE vid=42 AND seq=2' ./HOSTNAME)" = host-2 ] ||
  fail "resumed VM not scheduled on cluster 100's host"
[ "$(xpath 'SELECT body FROM vm_pool WHERE oid=42' "./TEMPLATE/DISK[DISK_ID='0']/DATASTORE_ID")" = 101 ] ||
  fail "disk DATASTORE_ID"
[ "$(xpath 'SELECT body FROM vm_pool WHERE oid=42' ./USER_TEMPLATE/SCHED_DS_REQUIREMENTS)" = "(absent)" ] ||
  fail "SCHED_DS_REQUIREMENTS left"
echo "ok: RUNNING VM undeployed, moved, switched and resumed through XML-RPC"

# Without the storage step a RUNNING VM over xmlrpc still needs --force (VM 43 is RUNNING).
expect_fail "VM 43 (db-01) is RUNNING" "$FERRY" migrate --catalog "$uri" --auth oneadmin:pw \
  --vm 43 --to-cluster 100 --storage none
