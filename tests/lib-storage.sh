# Helpers for the storage-step tests of `ferry migrate` (tests/test-migrate-storage-*.sh).
# A world like the demo's: the OpenNebula 6.8 fixture in SQLite, fs datastores under $T/ds,
# VM 42's non-persistent disk 0 at $T/ds/0/42/disk.0 (random data with holes).

# sqlite: catalogs probe oned's XML-RPC endpoint like onedb does: nothing listens on port 1.
export ONE_XMLRPC=http://127.0.0.1:1/RPC2

# make_world: creates $T/one.db, $T/ds/{0/42,1,100,101}, $T/ds/0/42/disk.0 and a copy
# $T/source.orig of the disk; $T/one.lock is the (absent) oned lock.
make_world() {
  requires sqlite3
  sqlite3 "$T/one.db" < "$SRCDIR/migrator/opennebula/fixtures/one-6.8.sql"
  mkdir -p "$T/ds/0/42" "$T/ds/1" "$T/ds/100" "$T/ds/101"
  local img=$T/ds/0/42/disk.0
  truncate -s 8M "$img"
  head -c 1M /dev/urandom | dd of="$img" bs=1M seek=1 conv=notrunc status=none
  head -c 512K /dev/urandom | dd of="$img" bs=512K seek=11 conv=notrunc status=none
  cp --sparse=always "$img" "$T/source.orig"
}

# db_dump: the catalog's content, to compare before/after.
db_dump() { sqlite3 "$T/one.db" .dump; }

# migrate ARGS...: ferry migrate on the world's catalog, VM 42 to cluster 100.
migrate() {
  "$FERRY" migrate --catalog "sqlite:$T/one.db" --one-lock "$T/one.lock" --vm 42 \
    --to-cluster 100 "$@"
}

# xpath ROW_SQL XPATH: value of XPATH in the body returned by ROW_SQL.
xpath() {
  sqlite3 "$T/one.db" "$1" | /usr/bin/python3 -c '
import sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
path = sys.argv[1]
el = root.find(path)
print("(absent)" if el is None else (el.text or ""))' "$2"
}

# wait_vm_state VMID STATE/LCM_STATE: poll the world's catalog until the VM is in that state
# (the XML-RPC stand-in finishes undeploys and schedules resumed VMs in the background, as
# oned's drivers and scheduler do); fails after 30 s.
wait_vm_state() {
  local i now
  for i in $(seq 300); do
    now=$(sqlite3 "$T/one.db" "SELECT state || '/' || lcm_state FROM vm_pool WHERE oid = $1")
    [ "$now" = "$2" ] && return 0
    sleep 0.1
  done
  echo "VM $1 is $now, not $2" >&2
  return 1
}
