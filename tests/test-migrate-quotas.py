# Issue 11 point 8: the owners' datastore quota usage moves with the disks and images, in the
# same switch, counted as oned and onedb fsck count it (src/onedb/fsck/quotas.rb
# calculate_ds_quotas/calculate_system_quotas; VirtualMachineDisk::image_ds_size; Quota::
# check_quota adds an entry with limits -1, Quota::cleanup_quota drops one back at zero):
# IMAGES_USED/SIZE_USED for each image on its DATASTORE_ID, SIZE_USED for each DISK whose copy
# lives in the image datastore (CLONE_TARGET=SELF), VM_QUOTA SYSTEM_DISK_SIZE_USED for the ones
# in the system datastore.  User 2 (alice) / group 100 (dev) own VM 43 and images 10, 11.
# 5.12, 6.8, 6.10, 7.0 on SQLite, XML-RPC below; MariaDB in test-migrate-mariadb.py.
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (LOCK, T, add_quotas, add_shared_cluster, add_volatile_disks, checksum,
                         expect_refusal, fail, ferry, make_catalog, make_db, sql)
from test_xmlrpc_helpers import start_responder


def quotas(db):
    """{(table, owner): {ds or 'SYS': (images_used, size_used)}} of every quota row."""
    out = {}
    for table, key in (("user_quotas", "user_oid"), ("group_quotas", "group_oid")):
        for oid, body in sql(db, "SELECT %s, body FROM %s" % (key, table)):
            q = {}
            for e in re.findall(r"<DATASTORE>(.*?)</DATASTORE>", body):
                v = dict(re.findall(r"<([A-Z_]+)><!\[CDATA\[([^\]]*)\]\]>", e))
                q[int(v["ID"])] = (int(v["IMAGES_USED"]), int(v["SIZE_USED"]))
            m = re.search(r"<SYSTEM_DISK_SIZE_USED><!\[CDATA\[(\d+)\]\]>", body)
            if m:
                q["SYS"] = int(m.group(1))
            out[(table, oid)] = q
    return out


def expect(db, want, what):
    got = quotas(db)
    for owner in (("user_quotas", 2), ("group_quotas", 100)):
        if got[owner] != want:
            fail("%s: %s quotas %s, expected %s" % (what, owner, got[owner], want))
    if got[("user_quotas", 0)] != {}:
        fail("%s: oneadmin got quotas" % what)


for variant in ("5.12", "6.8", "6.10", "7.0"):
    db = make_catalog(os.path.join(T, "one-%s.db" % variant), variant)
    base = ["--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none"]
    orig = checksum(db)
    expect(db, {1: (2, 71680), "SYS": 0}, variant + " before")
    # Ceph A -> B: image 11 (51200) and VM 43's SELF clone of image 10 (10240) move to 101.
    ferry(*base, "--vm", 43, "--to-cluster", 100, "--force", "--journal",
          os.path.join(T, "q1-%s.json" % variant))
    expect(db, {1: (1, 10240), 101: (1, 61440), "SYS": 0}, variant + " VM 43 -> cluster 100")
    body = sql(db, "SELECT body FROM user_quotas WHERE user_oid = 2")[0][0]
    if "<DATASTORE><ID><![CDATA[101]]></ID><IMAGES><![CDATA[-1]]></IMAGES><IMAGES_USED>" \
            "<![CDATA[1]]></IMAGES_USED><SIZE><![CDATA[-1]]></SIZE><SIZE_USED><![CDATA[61440]]>" \
            "</SIZE_USED></DATASTORE></DATASTORE_QUOTA>" not in body:
        fail("%s: new quota entry not written as oned does: %s" % (variant, body))
    # Then VM 42 (oneadmin's) takes image 10 along, its last user: alice's entry on datastore 1
    # falls to zero with default limits and goes (Quota::cleanup_quota).
    ferry(*base, "--vm", 42, "--to-cluster", 100, "--journal",
          os.path.join(T, "q2-%s.json" % variant))
    expect(db, {101: (2, 71680), "SYS": 0}, variant + " then VM 42 -> cluster 100")
    ferry("--rollback", os.path.join(T, "q2-%s.json" % variant), "--one-lock", LOCK)
    ferry("--rollback", os.path.join(T, "q1-%s.json" % variant), "--one-lock", LOCK)
    if checksum(db) != orig:
        fail("%s: rollbacks not byte-exact" % variant)
    # ceph -> shared: CLONE_TARGET becomes SYSTEM, so VM 43's clone counts as system disk.
    ferry(*base, "--vm", 43, "--to-cluster", 200, "--force", "--journal",
          os.path.join(T, "q3-%s.json" % variant))
    expect(db, {1: (1, 10240), 201: (1, 51200), "SYS": 10240}, variant + " VM 43 -> shared")
    print("ok: %s: datastore and system disk quotas follow the moves, entries added and "
          "dropped as oned does, rollback exact" % variant)

# An explicit limit the move would exceed is refused.
db = make_db(os.path.join(T, "limit.db"))
add_shared_cluster(db)
add_volatile_disks(db)
add_quotas(db, size_limit_101=50000)
expect_refusal(db, "user 2: the move would use 61440 of SIZE on datastore 101, over its quota "
               "limit 50000", "--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage",
               "none", "--vm", 43, "--to-cluster", 100, "--force")

# Through oned's XML-RPC API: the same quota rows, written with one.system.sql.
db = make_catalog(os.path.join(T, "xmlrpc.db"), "6.10")
uri, session = start_responder(db)
ferry("--catalog", uri, "--auth", session, "--storage", "none", "--vm", 43, "--to-cluster", 100,
      "--force", "--journal", os.path.join(T, "x.json"))
expect(db, {1: (1, 10240), 101: (1, 61440), "SYS": 0}, "xmlrpc")
print("ok: xmlrpc 6.10: quotas follow")
