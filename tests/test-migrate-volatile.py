# Issue 11 point 6: volatile disks (TYPE fs/swap) live in the system datastore — after deploy oned
# gives them its DATASTORE_ID/DATASTORE/TM_MAD and inherited values
# (VirtualMachineDisks::volatile_info, src/vm/VirtualMachineDisk.cc) — so they move with the
# system datastore (system-a 0 -> system-b 100), never to the image datastore; a volatile disk
# never deployed has nothing to move and is skipped with a note (never silently), and naming it
# with --disk is refused.  5.12, 6.8, 6.10, 7.0 on SQLite; MariaDB in test-migrate-mariadb.py,
# XML-RPC below.
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (LOCK, T, checksum, check_inherited, disk_of, ds_template, expect_refusal,
                         fail, ferry, make_catalog, sql)
from test_xmlrpc_helpers import start_responder


def check_volatile(db, what):
    body = sql(db, "SELECT body FROM vm_pool WHERE oid = 42")[0][0]
    d2 = disk_of(body, 2)
    for k, v in {"DATASTORE": "system-b", "DATASTORE_ID": "100", "CLUSTER_ID": "100",
                 "TM_MAD": "ceph", "TYPE": "fs", "DISK_TYPE": "RBD"}.items():
        if d2.get(k) != v:
            fail("%s: volatile DISK 2 %s=%r, expected %r" % (what, k, d2.get(k), v))
    check_inherited(d2, ds_template(db, 100), what + " volatile DISK 2")
    if "DATASTORE_ID" in disk_of(body, 3):
        fail("%s: the undeployed swap disk got a datastore" % what)
    short = sql(db, "SELECT short_body FROM vm_pool WHERE oid = 42")[0][0]
    if "<DISK_ID><![CDATA[2]]></DISK_ID><DATASTORE><![CDATA[system-b]]></DATASTORE>" \
            "<DATASTORE_ID><![CDATA[100]]></DATASTORE_ID>" not in short:
        fail("%s: short_body of the volatile disk not in step" % what)


for variant in ("5.12", "6.8", "6.10", "7.0"):
    db = make_catalog(os.path.join(T, "one-%s.db" % variant), variant)
    base = ["--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 42,
            "--to-cluster", 100]
    orig = checksum(db)
    journal = os.path.join(T, "v-%s.json" % variant)
    p = ferry(*base, "--json", "--journal", journal)
    report = json.loads(p.stdout)
    note = ("disk 3 skipped: volatile (swap) and never deployed, nothing to move: oned fills it "
            "from the system datastore at deploy")
    if note not in report["notes"]:
        fail("%s: no note for the skipped disk: %s" % (variant, report["notes"]))
    check_volatile(db, variant)
    print("ok: %s: volatile DISK 2 moved with the system datastore, DISK 3 skipped with a note"
          % variant)
    ferry("--rollback", journal, "--one-lock", LOCK)
    if checksum(db) != orig:
        fail("%s: rollback not byte-exact" % variant)
    expect_refusal(db, "VM 42 disk 3: volatile and never deployed (no DATASTORE_ID): nothing "
                   "to move", *base, "--disk", 3)

# The same through a running oned's XML-RPC API.
db = make_catalog(os.path.join(T, "xmlrpc.db"), "7.0")
uri, session = start_responder(db)
ferry("--catalog", uri, "--auth", session, "--storage", "none", "--vm", 42, "--to-cluster", 100,
      "--journal", os.path.join(T, "x.json"))
check_volatile(db, "xmlrpc 7.0")
print("ok: xmlrpc 7.0: volatile DISK 2 moved with the system datastore")
