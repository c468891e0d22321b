# ferry migrate through a running oned's XML-RPC API (one.system.sqlquery / one.system.sql,
# base64 <NAME64> columns, one.vm.info read-back).  oned cannot run here: the peer is
# tests/one_xmlrpc_responder.py, which implements exactly those calls over a real SQLite
# catalog.  Exact edits, rollback, auth, a write that "succeeds" without landing (detected by
# the read-back and undone), values the SQL path cannot carry.
import atexit
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (T, check_edits, checksum, dump_rows, edit_set, fail, ferry,
                         ferry_edit_set, make_db, sql, vm43_to_cluster100_edits)

HERE = os.path.dirname(os.path.abspath(__file__))
SESSION = "oneadmin:opensesame"


def start_responder(db, *extra):
    port_file = os.path.join(T, "port.%d" % len(os.listdir(T)))
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "one_xmlrpc_responder.py"), db,
                             port_file, SESSION] + list(extra))
    atexit.register(lambda: (proc.terminate(), proc.wait()))
    for _ in range(400):  # wait for the port file (written atomically once listening)
        if os.path.exists(port_file):
            return "xmlrpc://127.0.0.1:%s/RPC2" % open(port_file).read().strip()
        if proc.poll() is not None:
            fail("responder exited")
        time.sleep(0.05)
    fail("responder did not start")


db = make_db(os.path.join(T, "one.db"))
uri = start_responder(db)
lock = os.path.join(T, "one.lock")
open(lock, "w").close()  # oned "runs": the xmlrpc catalog is the one that does not mind
move = ["--catalog", uri, "--auth", SESSION, "--one-lock", lock, "--storage", "none", "--vm", 43,
        "--to-cluster", 100, "--force"]
orig_rows, orig_sum = dump_rows(db), checksum(db)

p = ferry(*move, "--dry-run")
if "dry run: 28 edit(s) planned" not in p.stdout or checksum(db) != orig_sum:
    fail("dry-run: " + p.stdout)
print("ok: dry-run over XML-RPC changes nothing")

journal = os.path.join(T, "move.json")
p = ferry(*move, "--json", "--journal", journal)
expected = vm43_to_cluster100_edits()
if ferry_edit_set(json.loads(p.stdout)) != edit_set(expected):
    fail("reported edits differ")
check_edits(orig_rows, dump_rows(db), expected)
moved_sum = checksum(db)
p = ferry(*move, "--journal", os.path.join(T, "again.json"))
if "nothing to do" not in p.stdout or checksum(db) != moved_sum:
    fail("re-run not a no-op")
print("ok: re-run is a no-op")

# Rollback: catalog URI from the journal, session from $ONE_AUTH.
auth_file = os.path.join(T, "one_auth")
open(auth_file, "w").write(SESSION + "\n")
p = ferry("--rollback", journal, env={"ONE_AUTH": auth_file})
if checksum(db) != orig_sum:
    fail("rollback over XML-RPC not byte-exact")
print("ok: rollback over XML-RPC (session from $ONE_AUTH) is byte-exact")

# Wrong session, missing session.
p = ferry("--catalog", uri, "--auth", "oneadmin:wrong", *move[4:], rc=1)
if "User couldn't be authenticated" not in p.stderr:
    fail("bad auth: " + p.stderr)
print("ok: refused: " + p.stderr.strip())
p = ferry("--catalog", uri, *move[4:], rc=1, env={"ONE_AUTH": os.path.join(T, "nope")})
if "no session: pass --auth USER:PASSWORD or set ONE_AUTH" not in p.stderr:
    fail("no auth: " + p.stderr)
print("ok: refused: " + p.stderr.strip())

# one.system.sql answering success without writing (the 3rd write): the read-back catches
# it, the rows already written are put back, the catalog ends unchanged.
db2 = make_db(os.path.join(T, "lie.db"))
uri2 = start_responder(db2, "--lie-on-sql", "3")
p = ferry("--catalog", uri2, *move[2:], "--journal", os.path.join(T, "lie.json"), rc=1)
if "read back differs from what was written" not in p.stderr:
    fail("lying write not detected: " + p.stderr)
if checksum(db2) != orig_sum:
    fail("lying write: rows not put back")
print("ok: a write that did not land is detected and the others undone: " + p.stderr.strip())

# A value with a backslash: ferry learns oned's DB backend (one.system.config) and writes hex
# literals, so it reaches a SQLite- and a MySQL-backed oned unchanged (on MySQL a quoted
# 'prod\db' would have become 'proddb').  When oned does not say, the value is refused before
# the first write, and the message says nothing was written.
LABEL_BS = ("UPDATE vm_pool SET body = replace(body, '<LABELS><![CDATA[prod/db]]>', "
            "'<LABELS><![CDATA[prod\\db]]>') WHERE oid = 43")
for backend in ("sqlite", "mysql"):
    dbb = make_db(os.path.join(T, "bs-%s.db" % backend))
    sql(dbb, LABEL_BS)
    before = dump_rows(dbb)
    urib = start_responder(dbb, "--backend", backend)
    p = ferry("--catalog", urib, *move[2:], "--journal", os.path.join(T, "bs-%s.json" % backend))
    after = dump_rows(dbb)
    if "<LABELS><![CDATA[prod\\db]]></LABELS>" not in after[("vm_pool", (43,))]["body"]:
        fail("%s: the backslash did not survive: %s" % (backend, after[("vm_pool", (43,))]["body"]))
    check_edits(before, after, vm43_to_cluster100_edits())
    print("ok: a value with a backslash reaches a %s-backed oned byte for byte" % backend)
dbn = make_db(os.path.join(T, "bs-unknown.db"))
sql(dbn, LABEL_BS)
before = checksum(dbn)
urin = start_responder(dbn, "--no-config")
p = ferry("--catalog", urin, *move[2:], "--journal", os.path.join(T, "bs.json"), rc=1)
if "holds a backslash and oned did not say which database it uses" not in p.stderr or \
        "nothing written" not in p.stderr or checksum(dbn) != before:
    fail("backslash with an unknown backend: " + p.stderr)
print("ok: refused before any write: " + p.stderr.strip())
