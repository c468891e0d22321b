# ferry migrate on a real MariaDB server (mariadbd started here on a unix socket, stopped by
# PID): the fixture loaded with MySQL DDL, the move of VM 43 to cluster 100 makes exactly the
# README's edits; dry-run, crash before COMMIT, rollback, MyISAM and connection refusals.
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (CEPH_ONLY, LOCK, SHARED_C, T, check_edits, check_inherited,
                         checksum_mariadb, disk_of, dump_rows_mariadb, edit_set, fail, ferry,
                         ferry_edit_set, load_fixture_mariadb, load_sqlite_into_mariadb,
                         make_catalog, mariadb, set_state, sql, start_mariadb,
                         vm43_to_cluster100_edits)
from test_xmlrpc_helpers import start_responder

p = ferry("--help")
sock = start_mariadb()
load_fixture_mariadb(sock, "one")
cat = "mysql://root@localhost/one?socket=" + sock
move = ["--catalog", cat, "--one-lock", LOCK, "--storage", "none", "--vm", 43, "--to-cluster",
        100, "--force"]
orig_rows, orig_sum = dump_rows_mariadb(sock, "one"), checksum_mariadb(sock, "one")

p = ferry(*move, "--dry-run")
if "dry run: 28 edit(s) planned" not in p.stdout or checksum_mariadb(sock, "one") != orig_sum:
    fail("dry-run: " + p.stdout)
print("ok: dry-run changes nothing")

# A crash after the UPDATEs but before COMMIT: the transaction never happened.
crash_journal = os.path.join(T, "crash.json")
ferry(*move, "--journal", crash_journal, rc=99, env={"FERRY_TEST_CRASH_BEFORE_COMMIT": "1"})
if checksum_mariadb(sock, "one") != orig_sum:
    fail("crash before COMMIT changed the catalog")
print("ok: crash before COMMIT leaves the catalog unchanged")

journal = os.path.join(T, "move.json")
p = ferry(*move, "--json", "--journal", journal)
expected = vm43_to_cluster100_edits()
if ferry_edit_set(json.loads(p.stdout)) != edit_set(expected):
    fail("reported edits differ: %s" % ferry_edit_set(json.loads(p.stdout)))
check_edits(orig_rows, dump_rows_mariadb(sock, "one"), expected)
moved_sum = checksum_mariadb(sock, "one")

p = ferry(*move, "--journal", os.path.join(T, "again.json"))
if "nothing to do" not in p.stdout or checksum_mariadb(sock, "one") != moved_sum:
    fail("re-run not a no-op")
print("ok: re-run is a no-op")

p = ferry("--rollback", journal, "--one-lock", LOCK)
if checksum_mariadb(sock, "one") != orig_sum:
    fail("rollback not exact")
print("ok: rollback restores every row exactly")

# Journal mismatch: a row changed after the switch.
ferry(*move, "--journal", os.path.join(T, "move2.json"))
mariadb(sock, "UPDATE history SET etime = 5, body = CONCAT(body, '') WHERE vid = 43", "one")
mariadb(sock, "UPDATE vm_pool SET short_body = REPLACE(short_body, 'db-01', 'db-02') "
        "WHERE oid = 43", "one")
changed = checksum_mariadb(sock, "one")
p = ferry("--rollback", os.path.join(T, "move2.json"), "--one-lock", LOCK, rc=1)
if "does not match the catalog" not in p.stderr or "vm_pool oid 43" not in p.stderr or \
        checksum_mariadb(sock, "one") != changed:
    fail("mismatching rollback: " + p.stderr)
print("ok: rollback refused: " + p.stderr.strip())

# Refusals: a table without transactions, a user that cannot connect, oned's lock.
load_fixture_mariadb(sock, "one")
mariadb(sock, "ALTER TABLE history ENGINE = MyISAM", "one")
p = ferry(*move, rc=1)
if "table history uses engine MyISAM, which has no transactions" not in p.stderr:
    fail("MyISAM: " + p.stderr)
print("ok: refused: " + p.stderr.strip())
p = ferry("--catalog", "mysql://nobody:wrong@localhost/one?socket=" + sock, *move[2:], rc=1)
if "cannot connect" not in p.stderr or "nobody:***@localhost" not in p.stderr or \
        "wrong" in p.stderr:
    fail("bad user (and the password must not be printed): " + p.stderr)
print("ok: refused: " + p.stderr.strip())
lock = os.path.join(T, "lock")
open(lock, "w").close()
p = ferry("--catalog", cat, "--one-lock", lock, *move[4:], rc=1)
if "oned lock %s exists" % lock not in p.stderr:
    fail("lock: " + p.stderr)
print("ok: refused: " + p.stderr.strip())


# ---- issue 11 on MariaDB: the catalog variants of tests/lib_migrate.py ----
variant_db = make_catalog(os.path.join(T, "variant.db"))
SCRIPT = "<START_SCRIPT><![CDATA[@echo off\r\necho hello\r\n]]></START_SCRIPT>"
sql(variant_db, "UPDATE vm_pool SET body = replace(body, '<TARGET><![CDATA[hda]]></TARGET>', "
    "'%s<TARGET><![CDATA[hda]]></TARGET>') WHERE oid = 43" % SCRIPT)
load_sqlite_into_mariadb(sock, "v", variant_db)
vcat = "mysql://root@localhost/v?socket=" + sock
vbase = ["--catalog", vcat, "--one-lock", LOCK, "--storage", "none"]


def vbody(vm):
    return dump_rows_mariadb(sock, "v")[("vm_pool", (vm,))]["body"]


def vds(oid):
    import xml.etree.ElementTree as ET
    b = dump_rows_mariadb(sock, "v")[("datastore_pool", (oid,))]["body"]
    return {c.tag: c.text or "" for c in ET.fromstring(b).find("TEMPLATE")}


# Points 4, 5: Ceph A -> B (VM 42) and ceph -> shared (VM 43), as Datastore::disk_attribute.
vorig = checksum_mariadb(sock, "v")
ferry(*vbase, "--vm", 42, "--to-cluster", 100, "--journal", os.path.join(T, "v42.json"))
d0 = disk_of(vbody(42), 0)
check_inherited(d0, vds(101), "MariaDB VM 42 DISK 0")
if d0["SOURCE"] != "one-b/one-10":
    fail("MariaDB: SOURCE " + d0["SOURCE"])
# Point 6: its volatile disk went with the system datastore.
d2 = disk_of(vbody(42), 2)
if (d2["DATASTORE_ID"], d2["DATASTORE"], d2["POOL_NAME"]) != ("100", "system-b", "one-b"):
    fail("MariaDB: volatile disk %s" % d2)
print("ok: MariaDB: Ceph A -> B: inherited values of datastore 101, SOURCE one-b/one-10, the "
      "volatile disk with system datastore 100")
ferry(*vbase, "--vm", 43, "--to-cluster", 200, "--force", "--journal",
      os.path.join(T, "v43.json"))
body = vbody(43)
for d in (0, 1):
    disk = disk_of(body, d)
    check_inherited(disk, vds(201), "MariaDB VM 43 DISK %d" % d)
    if any(disk.get(k) != v for k, v in SHARED_C.items()) or any(a in disk for a in CEPH_ONLY):
        fail("MariaDB: ceph -> shared DISK %d: %s" % (d, disk))
# Point 11: the CRLFs of START_SCRIPT survive.
if SCRIPT not in body:
    fail("MariaDB: CRLF inside CDATA not kept")
# Point 8: quotas, in the same transaction.  VM 42 left first, so image 10 (no user left on
# datastore 1) went with VM 43: alice's datastore 1 entry fell to zero and was dropped, both
# images count on 201, VM 43's clone (CLONE_TARGET now SYSTEM) as system disk.
q = dump_rows_mariadb(sock, "v")[("user_quotas", (2,))]["body"]
for frag in ("<DATASTORE_QUOTA><DATASTORE><ID><![CDATA[201]]></ID><IMAGES><![CDATA[-1]]></IMAGES>"
             "<IMAGES_USED><![CDATA[2]]></IMAGES_USED><SIZE><![CDATA[-1]]></SIZE><SIZE_USED>"
             "<![CDATA[61440]]></SIZE_USED></DATASTORE></DATASTORE_QUOTA>",
             "<SYSTEM_DISK_SIZE_USED><![CDATA[10240]]></SYSTEM_DISK_SIZE_USED>"):
    if frag not in q:
        fail("MariaDB: user 2 quotas lack %s: %s" % (frag, q))
print("ok: MariaDB: ceph -> shared as datastore 201 fills it, CRLF kept, quotas moved")
ferry("--rollback", os.path.join(T, "v43.json"), "--one-lock", LOCK)
ferry("--rollback", os.path.join(T, "v42.json"), "--one-lock", LOCK)
if checksum_mariadb(sock, "v") != vorig:
    fail("MariaDB: rollbacks of the variant moves not exact")
print("ok: MariaDB: both rolled back exactly")

# Point 7: POWEROFF refused on a mysql: catalog (oned stopped cannot undeploy it).
set_state(variant_db, 42, 8, 0)
load_sqlite_into_mariadb(sock, "p", variant_db)
p = ferry("--catalog", "mysql://root@localhost/p?socket=" + sock, *vbase[2:], "--vm", 42,
          "--to-cluster", 100, rc=1)
if "VM 42 (web-01) is POWEROFF: oned resumes a powered-off VM on the same host" not in p.stderr:
    fail("MariaDB POWEROFF: " + p.stderr)
print("ok: MariaDB: refused: " + p.stderr.strip().splitlines()[-1][:100] + "...")

# Point 9: an oned answering on its endpoint makes mysql: refuse too.
uri, _ = start_responder(variant_db)
p = ferry(*vbase, "--vm", 42, "--to-cluster", 100, rc=1,
          env={"ONE_XMLRPC": uri.replace("xmlrpc://", "http://")})
if "oned answers on http://127.0.0.1:" not in p.stderr or checksum_mariadb(sock, "v") != vorig:
    fail("MariaDB with oned answering: " + p.stderr)
print("ok: MariaDB: refused: " + p.stderr.strip())

# Point 11: a broken body is refused with its object named.
mariadb(sock, "UPDATE image_pool SET body = CONCAT(body, '<') WHERE oid = 10", "v")
p = ferry(*vbase, "--vm", 42, "--to-cluster", 100, rc=1)
if "image_pool oid 10 body: not well-formed XML" not in p.stderr:
    fail("MariaDB broken body: " + p.stderr)
print("ok: MariaDB: refused: " + p.stderr.strip().splitlines()[-1])
