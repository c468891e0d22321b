# Issue 11 points 4 and 5: a moved DISK ends up as Datastore::disk_attribute
# (src/datastore/Datastore.cc) would fill it from the destination datastore, on the 5.12, 6.8,
# 6.10 and 7.0 catalogs (SQLite; MariaDB in test-migrate-mariadb.py, XML-RPC in
# test-migrate-xmlrpc-json.py):
# - Ceph cluster A -> B (VM 42): every inherited attribute (CEPH_HOST, CEPH_SECRET, POOL_NAME...)
#   equals datastore 101's, SOURCE names pool one-b (tm/ceph names the clone SOURCE-VMID-DISKID);
# - ceph -> shared (VM 43 to cluster 200): TM_MAD, TYPE (RBD -> FILE), CLONE_TARGET (SELF ->
#   SYSTEM), ALLOW_ORPHANS follow datastore 201, DISK_TYPE/POOL_NAME/CEPH_* go, the moved image's
#   SOURCE becomes a path of datastore 201 and its DISK_TYPE FILE, TM_MAD_SYSTEM follows the new
#   system datastore; the base image that stays keeps its SOURCE;
# - a value set by hand (neither datastore's) is refused by name, nothing changes;
# and body_json stays oned's text of the body, short_body in step, rollback byte-exact.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (CEPH_ONLY, LOCK, SHARED_C, T, body_json_of, checksum, disk_of,
                         ds_template, check_inherited, expect_refusal, fail, ferry, make_catalog,
                         sql)


def vm_rows(db, vm):
    return sql(db, "SELECT body, short_body FROM vm_pool WHERE oid = ?", (vm,))[0]


def check_columns(db, vm, variant):
    """short_body's DISKs say what the body's say; body_json is oned's text for the body."""
    body, short = vm_rows(db, vm)
    import xml.etree.ElementTree as ET
    for sd in ET.fromstring(short).findall("TEMPLATE/DISK"):
        bd = disk_of(body, sd.findtext("DISK_ID"))
        for c in sd:
            if (c.text or "") != bd.get(c.tag, ""):
                fail("%s: VM %d short_body DISK %s %s=%r, body says %r"
                     % (variant, vm, sd.findtext("DISK_ID"), c.tag, c.text, bd.get(c.tag)))
    if variant in ("6.10", "7.0"):
        js = sql(db, "SELECT body_json FROM vm_pool WHERE oid = ?", (vm,))[0][0]
        if js != body_json_of(body):
            fail("%s: VM %d body_json is not oned's text of its body" % (variant, vm))


for variant in ("5.12", "6.8", "6.10", "7.0"):
    db = make_catalog(os.path.join(T, "one-%s.db" % variant), variant)
    base = ["--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none"]
    orig = checksum(db)

    # Ceph A -> B: VM 42 (UNDEPLOYED), its image disk 0 and volatile disk 2.
    journal = os.path.join(T, "a-b-%s.json" % variant)
    ferry(*base, "--vm", 42, "--to-cluster", 100, "--journal", journal)
    body, _ = vm_rows(db, 42)
    d0 = disk_of(body, 0)
    check_inherited(d0, ds_template(db, 101), "%s VM 42 DISK 0" % variant)
    want = {"DATASTORE": "images-b", "DATASTORE_ID": "101", "CLUSTER_ID": "100",
            "SOURCE": "one-b/one-10", "TYPE": "RBD"}
    for k, v in want.items():
        if d0.get(k) != v:
            fail("%s: VM 42 DISK 0 %s=%r, expected %r" % (variant, k, d0.get(k), v))
    check_columns(db, 42, variant)
    print("ok: %s: Ceph A -> B: VM 42 DISK 0 holds datastore 101's inherited values, SOURCE "
          "one-b/one-10" % variant)
    ferry("--rollback", journal, "--one-lock", LOCK)
    if checksum(db) != orig:
        fail("%s: rollback of the Ceph move not byte-exact" % variant)

    # ceph -> shared: VM 43 (RUNNING, --force) to cluster 200.
    journal = os.path.join(T, "c-s-%s.json" % variant)
    p = ferry(*base, "--vm", 43, "--to-cluster", 200, "--force", "--journal", journal)
    body, _ = vm_rows(db, 43)
    for d in (0, 1):
        disk = disk_of(body, d)
        check_inherited(disk, ds_template(db, 201), "%s VM 43 DISK %d" % (variant, d))
        for k, v in SHARED_C.items():
            if disk.get(k) != v:
                fail("%s: VM 43 DISK %d %s=%r, expected %r" % (variant, d, k, disk.get(k), v))
        left = [a for a in CEPH_ONLY if a in disk]
        if left:
            fail("%s: VM 43 DISK %d keeps %s after the move to shared" % (variant, d, left))
    if disk_of(body, 1)["SOURCE"] != "/var/lib/one//datastores/201/one-11":
        fail("%s: persistent image's SOURCE: %s" % (variant, disk_of(body, 1)["SOURCE"]))
    if disk_of(body, 0)["SOURCE"] != "one-a/one-10":
        fail("%s: the base image stays on datastore 1, its SOURCE must stay" % variant)
    img = sql(db, "SELECT body FROM image_pool WHERE oid = 11")[0][0]
    for frag in ("<SOURCE><![CDATA[/var/lib/one//datastores/201/one-11]]></SOURCE>",
                 "<DISK_TYPE>0</DISK_TYPE>", "<DATASTORE_ID>201</DATASTORE_ID>"):
        if frag not in img:
            fail("%s: image 11 lacks %s: %s" % (variant, frag, img))
    if "<TM_MAD_SYSTEM><![CDATA[shared]]></TM_MAD_SYSTEM>" not in body:
        fail("%s: VM 43 TM_MAD_SYSTEM does not follow system datastore 200" % variant)
    check_columns(db, 43, variant)
    print("ok: %s: ceph -> shared: TM_MAD, TYPE, CLONE_TARGET, ALLOW_ORPHANS of datastore 201, "
          "Ceph values gone, SOURCE and image DISK_TYPE follow, TM_MAD_SYSTEM shared" % variant)
    ferry("--rollback", journal, "--one-lock", LOCK)
    if checksum(db) != orig:
        fail("%s: rollback of the ceph -> shared move not byte-exact" % variant)

# A value the datastore did not give is refused by name.
db = make_catalog(os.path.join(T, "hand.db"))
sql(db, "UPDATE vm_pool SET body = replace(body, '<CEPH_USER><![CDATA[oneadmin]]></CEPH_USER>"
        "<CLONE><![CDATA[YES]]>', '<CEPH_USER><![CDATA[bob]]></CEPH_USER><CLONE><![CDATA[YES]]>') "
        "WHERE oid = 42")
expect_refusal(db, "VM 42 disk 0: CEPH_USER is 'bob', neither datastore 1 (images-a)'s "
               "oneadmin nor datastore 101 (images-b)'s oneadmin: not inherited",
               "--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 42,
               "--to-cluster", 100)

# A system datastore of another driver (ssh) under shared images: oned's check_tm_mad gives each
# DISK TM_MAD_SYSTEM=ssh and the image datastore's CLONE_TARGET_SSH/LN_TARGET_SSH/DISK_TYPE_SSH
# (VirtualMachineDisks::check_tm_mad); without those, oned would not deploy, so ferry refuses.
from lib_migrate import ds_body  # noqa: E402
for variant in ("6.8", "7.0"):
    db = make_catalog(os.path.join(T, "ssh-%s.db" % variant), variant)
    sql(db, "INSERT INTO datastore_pool VALUES (202, 'system-ssh', ?, 0, 0, 1, 1, 0)",
        (ds_body(202, "system-ssh", 1, "ssh", "-", 0, 200,
                 {"SHARED": "NO", "TM_MAD": "ssh", "TYPE": "SYSTEM_DS"}),))
    sql(db, "INSERT INTO cluster_datastore_relation VALUES (200, 202)")
    move = ["--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 43,
            "--to-datastore", 201, "--to-system-datastore", 202, "--force"]
    ferry(*move, "--journal", os.path.join(T, "ssh-%s.json" % variant))
    body, _ = vm_rows(db, 43)
    if "<TM_MAD_SYSTEM><![CDATA[ssh]]></TM_MAD_SYSTEM><VCPU>" not in body:
        fail("%s: VM TM_MAD_SYSTEM not ssh" % variant)
    for d in (0, 1):
        disk = disk_of(body, d)
        want = {"TM_MAD": "shared", "TM_MAD_SYSTEM": "ssh", "CLONE_TARGET": "SYSTEM",
                "LN_TARGET": "SYSTEM", "DISK_TYPE": "FILE", "TYPE": "FILE"}
        if any(disk.get(k) != v for k, v in want.items()):
            fail("%s: DISK %d under an ssh system datastore: %s" % (variant, d, disk))
    check_columns(db, 43, variant)
    print("ok: %s: shared images under an ssh system datastore: TM_MAD_SYSTEM ssh and the "
          "_SSH targets, as check_tm_mad sets them" % variant)
    ferry("--rollback", os.path.join(T, "ssh-%s.json" % variant), "--one-lock", LOCK)
    sql(db, "UPDATE datastore_pool SET body = replace(body, '<DISK_TYPE_SSH><![CDATA[FILE]]>"
            "</DISK_TYPE_SSH>', '') WHERE oid = 201")
    expect_refusal(db, "VM 43 disk 0: datastore 201 (images-c) has no DISK_TYPE_SSH: oned would "
                   "not run its disks on a ssh system datastore", *move)
