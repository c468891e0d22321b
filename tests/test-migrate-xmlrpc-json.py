# Issue 11 point 2: moves through a running oned's XML-RPC API on 6.10 and 7.0 catalogs, whose
# body_json always holds backslashes (one_util::escape_json writes "\/" and "\""), commit and
# read back every edit.  ferry learns oned's database from one.system.config and writes hex
# literals (a SQLite- and a MySQL-backed oned alike); body_json is edited in place, so it stays
# byte for byte what oned would write for the new body (tests/one_json.py).  When oned does not
# say which database it uses, a value with a backslash is refused before the first write; when
# a write does not land, what was written is put back and the message says so truly.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (T, check_edits, check_inherited, checksum, disk_of, ds_template,
                         dump_rows, edit_set, fail, ferry, ferry_edit_set,
                         make_db, sql, vm43_to_cluster100_edits)
from test_xmlrpc_helpers import start_responder
import json

for variant in ("6.10", "7.0"):
    for backend in ("sqlite", "mysql"):
        db = make_db(os.path.join(T, "one-%s-%s.db" % (variant, backend)), variant)
        if "\\/" not in sql(db, "SELECT body_json FROM vm_pool WHERE oid = 43")[0][0]:
            fail("the test catalog's body_json has no escaped slash")
        before, before_sum = dump_rows(db), checksum(db)
        uri, session = start_responder(db, "--backend", backend)
        move = ["--catalog", uri, "--auth", session, "--storage", "none", "--vm", 43,
                "--to-cluster", 100, "--force"]
        journal = os.path.join(T, "j-%s-%s.json" % (variant, backend))
        p = ferry(*move, "--json", "--journal", journal)
        expected = vm43_to_cluster100_edits(body_json=True)
        if ferry_edit_set(json.loads(p.stdout)) != edit_set(expected):
            fail("%s %s: reported edits differ" % (variant, backend))
        check_edits(before, dump_rows(db), expected)  # body_json: oned's bytes for the new body
        body = sql(db, "SELECT body FROM vm_pool WHERE oid = 43")[0][0]
        for d in (0, 1):
            check_inherited(disk_of(body, d), ds_template(db, 101), "VM 43 DISK %d" % d)
        ferry("--rollback", journal, "--auth", session)
        if checksum(db) != before_sum:
            fail("%s %s: rollback not byte-exact" % (variant, backend))
        print("ok: %s, %s-backed oned: committed, every edit read back, body_json in oned's "
              "layout, Ceph values of datastore 101, rollback exact" % (variant, backend))

    # A write that does not land (the 3rd one.system.sql: vm_pool body_json): put back, said so.
    db = make_db(os.path.join(T, "lie-%s.db" % variant), variant)
    before_sum = checksum(db)
    uri, session = start_responder(db, "--lie-on-sql", "3")
    p = ferry("--catalog", uri, "--auth", session, "--storage", "none", "--vm", 43,
              "--to-cluster", 100, "--force", "--journal", os.path.join(T, "lie-%s.json" % variant), rc=1)
    if "vm_pool oid 43: read back differs from what was written; the 1 row(s) changed were put " \
            "back: the catalog is as before" not in p.stderr or checksum(db) != before_sum:
        fail("%s: lying write: %s" % (variant, p.stderr))
    print("ok: %s: %s" % (variant, p.stderr.strip().splitlines()[0]))

    # oned does not say which database it uses: refused before the first write.
    db = make_db(os.path.join(T, "noconf-%s.db" % variant), variant)
    before_sum = checksum(db)
    uri, session = start_responder(db, "--no-config")
    p = ferry("--catalog", uri, "--auth", session, "--storage", "none", "--vm", 43,
              "--to-cluster", 100, "--force", "--journal", os.path.join(T, "nc-%s.json" % variant), rc=1)
    if "vm_pool oid 43 body_json: nothing written" not in p.stderr or \
            "holds a backslash" not in p.stderr or checksum(db) != before_sum:
        fail("%s: unknown backend: %s" % (variant, p.stderr))
    print("ok: %s: refused before any write when oned does not say its database" % variant)

# oned's sqlquery cuts its answer at a SQL NULL (a null char* into its stream; the stand-in does
# the same): ferry's queries never select one, e.g. a 7.x resched column holding NULL.
db = make_db(os.path.join(T, "null.db"), "7.0")
sql(db, "UPDATE vm_pool SET resched = NULL")
uri, session = start_responder(db)
p = ferry("--catalog", uri, "--auth", session, "--storage", "none", "--vm", 43, "--to-cluster",
          100, "--force", "--dry-run")
if "dry run:" not in p.stdout:
    fail("NULL resched: " + p.stdout)
print("ok: 7.0 with a NULL resched: no query of ferry's selects the NULL")
