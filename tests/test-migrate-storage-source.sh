#!/usr/bin/env bash
# Issue 11 point 3: `--storage fs` names the destination volume in the catalog.  On fs
# datastores an image's SOURCE is a path under its datastore's BASE_PATH; after the move the
# file is <destination datastore>/<name> (and the source renamed MIGRATED-...), so the image and
# the VM's DISK must name /var/lib/one//datastores/101/<name> — plan_set_disk_source, called by
# the storage step — not the old path.  VM 43 (persistent image 11 and a CLONE=YES disk) on
# datastores whose driver is shared, catalog in SQLite, oned stopped.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
make_world
mkdir -p "$T/ds/0/43"
mv "$T/ds/0/42/disk.0" "$T/ds/0/43/disk.0"
head -c 2M /dev/urandom > "$T/ds/1/one-11"
truncate -s 8M "$T/ds/1/one-11"
cp --sparse=always "$T/ds/1/one-11" "$T/one-11.orig"
# fs datastores (TM_MAD shared) and a path SOURCE, VM 43 undeployed.
sqlite3 "$T/one.db" "
UPDATE datastore_pool SET body = replace(body, '<TM_MAD><![CDATA[ceph]]></TM_MAD>',
  '<TM_MAD><![CDATA[shared]]></TM_MAD>');
UPDATE image_pool SET body = replace(body, '<SOURCE><![CDATA[one-a/one-11]]></SOURCE>',
  '<SOURCE><![CDATA[/var/lib/one//datastores/1/one-11]]></SOURCE>') WHERE oid = 11;
UPDATE vm_pool SET state = 9, lcm_state = 0,
  body = replace(replace(replace(replace(body, '<SOURCE><![CDATA[one-a/one-11]]></SOURCE>',
  '<SOURCE><![CDATA[/var/lib/one//datastores/1/one-11]]></SOURCE>'),
  '<TM_MAD><![CDATA[ceph]]></TM_MAD><TYPE>', '<TM_MAD><![CDATA[shared]]></TM_MAD><TYPE>'),
  '<STATE>3</STATE><LCM_STATE>3</LCM_STATE>', '<STATE>9</STATE><LCM_STATE>0</LCM_STATE>'),
  '<TM_MAD_SYSTEM><![CDATA[ceph]]>', '<TM_MAD_SYSTEM><![CDATA[shared]]>') WHERE oid = 43;"
src() { xpath "SELECT body FROM $1" "$2"; }
[ "$(src 'image_pool WHERE oid=11' ./SOURCE)" = /var/lib/one//datastores/1/one-11 ] ||
  fail "test world: image SOURCE"

"$FERRY" migrate --catalog "sqlite:$T/one.db" --one-lock "$T/one.lock" --vm 43 --to-cluster 100 \
  --storage fs --datastores "$T/ds" --journal "$T/j.json" > "$T/out" 2>&1 || { cat "$T/out"; fail "move"; }
cmp "$T/ds/101/one-11" "$T/one-11.orig" || fail "persistent image not at its new name"
ls "$T/ds/1/" | grep -qE '^MIGRATED-one-11-[0-9]+$' || fail "old volume not renamed MIGRATED-"
want=/var/lib/one//datastores/101/one-11
[ "$(src 'image_pool WHERE oid=11' ./SOURCE)" = "$want" ] ||
  fail "image 11 SOURCE: $(src 'image_pool WHERE oid=11' ./SOURCE), expected $want"
[ "$(src 'vm_pool WHERE oid=43' "./TEMPLATE/DISK[DISK_ID='1']/SOURCE")" = "$want" ] ||
  fail "VM 43 DISK 1 SOURCE: $(src 'vm_pool WHERE oid=43' "./TEMPLATE/DISK[DISK_ID='1']/SOURCE")"
grep -qF "set /VM/TEMPLATE/DISK[DISK_ID=1]/SOURCE '/var/lib/one//datastores/1/one-11' -> '$want'" \
  "$T/out" || { cat "$T/out"; fail "the plan does not show the SOURCE edit"; }
echo "ok: --storage fs: image 11 and VM 43's DISK name the moved volume, $want"

"$FERRY" migrate --rollback "$T/j.json" --one-lock "$T/one.lock" > "$T/rb" 2>&1 || { cat "$T/rb"; fail rollback; }
[ "$(src 'image_pool WHERE oid=11' ./SOURCE)" = /var/lib/one//datastores/1/one-11 ] ||
  fail "rollback: image SOURCE"
cmp "$T/ds/1/one-11" "$T/one-11.orig" || fail "rollback: volume not back"
echo "ok: rollback: SOURCE and volume back"
