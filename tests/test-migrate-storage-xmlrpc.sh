#!/usr/bin/env bash
# ferry migrate --storage fs through a running oned (xmlrpc catalog; the peer is
# tests/one_xmlrpc_responder.py over a real SQLite file, since oned cannot run here): RUNNING
# VM 43 with two disks (non-persistent 43/disk.0 in the system datastore, persistent image
# one-11 in the image datastore) is undeployed, both disks cloned by two ferry-nbd servers,
# the catalog switched, the VM resumed; --skip-resume leaves it undeployed.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
# A fresh world: catalog from the fixture, VM 43's two disks.
world43() {
  rm -rf "$T/ds" "$T/one.db"
  make_world
  mkdir -p "$T/ds/0/43"
  mv "$T/ds/0/42/disk.0" "$T/ds/0/43/disk.0"
  head -c 3M /dev/urandom > "$T/ds/1/one-11"
  truncate -s 16M "$T/ds/1/one-11"
  cp --sparse=always "$T/ds/1/one-11" "$T/one-11.orig"
}
world43
SESSION=oneadmin:opensesame
/usr/bin/python3 "$TESTS_DIR/one_xmlrpc_responder.py" "$T/one.db" "$T/port" "$SESSION" &
track_pid $!
wait_for_file "$T/port"
uri="xmlrpc://127.0.0.1:$(cat "$T/port")/RPC2"
state() { sqlite3 "$T/one.db" "SELECT state || '/' || lcm_state FROM vm_pool WHERE oid = 43"; }
[ "$(state)" = 3/3 ] || fail "fixture VM 43 not RUNNING"
move() {
  "$FERRY" migrate --catalog "$uri" --auth "$SESSION" --one-lock "$T/one.lock" --vm 43 \
    --to-cluster 100 --storage fs --datastores "$T/ds" "$@"
}

move --journal "$T/j.json" > "$T/out" 2>&1 || { cat "$T/out"; fail "migrate failed"; }
for line in "] VM stopped" "] VM resumed" "] disk 0: destination clone serving" \
  "] disk 1: destination clone serving" "downtime: "; do
  grep -qF -- "$line" "$T/out" || { cat "$T/out"; fail "output lacks: $line"; }
done
# resume = PENDING (DispatchManager::resume), then the scheduler deploys it with a new history
# record on a host of cluster 100.
wait_vm_state 43 3/3 || fail "VM 43 not resumed: $(state)"
[ "$(xpath 'SELECT body FROM history WHERE vid=43 AND seq=1' ./DS_ID)" = 100 ] ||
  fail "resumed VM 43 not deployed on system datastore 100"
[ "$(xpath 'SELECT body FROM history WHERE vid=43 AND seq=1' ./CID)" = 100 ] ||
  fail "resumed VM 43 not deployed in cluster 100"
cmp "$T/ds/100/43/disk.0" "$T/source.orig" || fail "disk 0 destination differs"
cmp "$T/ds/101/one-11" "$T/one-11.orig" || fail "disk 1 destination differs"
ls "$T/ds/1/" | grep -qE '^MIGRATED-one-11-[0-9]+$' || fail "persistent source not renamed"
ls "$T/ds/0/43/" | grep -qE '^MIGRATED-disk\.0-[0-9]+$' || fail "system-ds source not renamed"
[ "$(xpath 'SELECT body FROM image_pool WHERE oid=11' ./DATASTORE_ID)" = 101 ] ||
  fail "image 11 did not move to datastore 101"
[ "$(xpath 'SELECT body FROM history WHERE vid=43 AND seq=0' ./DS_ID)" = 100 ] ||
  fail "history DS_ID not switched"

# --skip-resume: the VM ferry undeployed stays undeployed; then --rollback restores the
# catalog rows and the files' names.
world43
move --journal "$T/j2.json" --skip-resume > "$T/out2" 2>&1 || { cat "$T/out2"; fail "migrate 2"; }
grep -qF "] VM resume skipped (--skip-resume)" "$T/out2" || fail "no skip-resume line"
[ "$(state)" = 9/0 ] || fail "VM 43 not left undeployed: $(state)"
"$FERRY" migrate --rollback "$T/j2.json" --auth "$SESSION" > "$T/rb" 2>&1 ||
  { cat "$T/rb"; fail "rollback failed"; }
cmp "$T/ds/1/one-11" "$T/one-11.orig" || fail "rollback: persistent source not back"
cmp "$T/ds/0/43/disk.0" "$T/source.orig" || fail "rollback: system-ds source not back"
[ "$(xpath 'SELECT body FROM image_pool WHERE oid=11' ./DATASTORE_ID)" = 1 ] ||
  fail "rollback: image 11 not back on datastore 1"
echo "migrate --storage fs over xmlrpc ok"
