# ferry migrate --storage none on an OpenNebula SQLite catalog (the repo's 6.8 fixture):
# the move of VM 43 (persistent image 11 + non-persistent image 10) to cluster 100 makes
# exactly the edits of the README and nothing else; dry-run, re-run, rollback, crashes.
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (LOCK, T, check_edits, checksum, dump_rows, edit_set, fail, ferry,
                         ferry_edit_set, make_db, sql, vm43_to_cluster100_edits)

db = make_db(os.path.join(T, "one.db"))
cat = "sqlite:" + db
move = ["--catalog", cat, "--one-lock", LOCK, "--storage", "none", "--vm", "43",
        "--to-cluster", "100", "--force"]
orig_sum = checksum(db)
orig_rows = dump_rows(db)

# Dry run: prints every edit with old and new value, changes nothing.
p = ferry(*move, "--dry-run")
for want in ["set /VM/TEMPLATE/DISK[DISK_ID=1]/DATASTORE_ID '1' -> '101'",
             "history vid 43 seq 0 body: set /HISTORY/DS_ID '0' -> '100'",
             "delete /VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS (was 'ID=\"0\"')",
             "datastore_pool oid 101 body: add /DATASTORE/IMAGES/ID 11",
             "image 10 (non-persistent) stays on datastore 1: still used there by VM 42",
             "dry run: 28 edit(s) planned, nothing changed"]:
    if want not in p.stdout:
        fail("dry-run output lacks %r:\n%s" % (want, p.stdout))
if checksum(db) != orig_sum:
    fail("dry-run changed the catalog")
print("ok: dry-run prints the plan and changes nothing")

# The move, with --json: the edit list ferry reports is exactly the README's.
journal = os.path.join(T, "move.json")
p = ferry(*move, "--json", "--journal", journal)
report = json.loads(p.stdout)
expected = vm43_to_cluster100_edits()
if report["result"] != "applied" or ferry_edit_set(report) != edit_set(expected):
    fail("reported edits differ:\n%s\nexpected:\n%s"
         % ("\n".join(map(str, ferry_edit_set(report))), "\n".join(map(str, edit_set(expected)))))
print("ok: ferry reports exactly the %d README edits" % len(expected))

# ...and the catalog holds exactly them: every other row and column byte-identical.
moved_rows = dump_rows(db)
check_edits(orig_rows, moved_rows, expected)
moved_sum = checksum(db)

# The journal: before- and after-image of every touched row, state committed.
j = json.load(open(journal))
if j["state"] != "committed" or j["vm"] != 43 or j["catalog"] != cat:
    fail("journal header wrong: %s" % {k: j[k] for k in ("state", "vm", "catalog")})
touched = sorted((r["table"], r["id"], r.get("seq")) for r in j["rows"])
if touched != [("datastore_pool", 1, None), ("datastore_pool", 101, None),
               ("history", 43, 0), ("image_pool", 11, None), ("vm_pool", 43, None)]:
    fail("journal rows: %s" % touched)
for r in j["rows"]:
    key = (r["table"], (r["id"], r["seq"]) if r["table"] == "history" else (r["id"],))
    for col, v in r["before"].items():
        if orig_rows[key][col] != v or moved_rows[key][col] != r["after"][col]:
            fail("journal image of %s %s is not the row" % (key, col))
print("ok: journal holds exact before/after images")

# Re-running the finished move is a no-op, and says so.
p = ferry(*move, "--journal", os.path.join(T, "again.json"))
if "nothing to do" not in p.stdout or os.path.exists(os.path.join(T, "again.json")):
    fail("re-run is not a no-op:\n" + p.stdout)
if checksum(db) != moved_sum:
    fail("re-run changed the catalog")
print("ok: re-run is a no-op")

# Rollback restores byte-identical rows (sha256 of the full dump).
p = ferry("--rollback", journal, "--one-lock", LOCK)
if "rolled back 5 row(s)" not in p.stdout:
    fail("rollback output: " + p.stdout)
if checksum(db) != orig_sum:
    fail("rollback did not restore the exact catalog")
if json.load(open(journal))["state"] != "rolled-back":
    fail("journal not marked rolled-back")
print("ok: rollback restores a byte-identical catalog")
p = ferry("--rollback", journal, "--one-lock", LOCK)
if "nothing to roll back" not in p.stdout or checksum(db) != orig_sum:
    fail("second rollback not a no-op: " + p.stdout)
print("ok: second rollback is a no-op")

# Rollback refuses when a row changed after the switch, and names it.
journal2 = os.path.join(T, "move2.json")
ferry(*move, "--journal", journal2)
sql(db, "UPDATE image_pool SET body = replace(body, '<SIZE>51200</SIZE>', '<SIZE>60000</SIZE>') "
        "WHERE oid = 11")
changed_sum = checksum(db)
p = ferry("--rollback", journal2, "--one-lock", LOCK, rc=1)
if "does not match the catalog" not in p.stderr or "image_pool oid 11" not in p.stderr:
    fail("rollback of a changed row not refused clearly: " + p.stderr)
if checksum(db) != changed_sum:
    fail("refused rollback changed the catalog")
print("ok: rollback refuses rows changed since the switch: " + p.stderr.strip())

# A journal that is not one.
bad = os.path.join(T, "bad.json")
open(bad, "w").write('{"hello": 1}\n')
p = ferry("--rollback", bad, "--catalog", cat, "--one-lock", LOCK, rc=1)
if "not a ferry journal" not in p.stderr:
    fail("bad journal: " + p.stderr)
print("ok: bad journal refused")

# Crash between journal and commit: the catalog is unchanged (both hook points).
for hook in ("FERRY_TEST_CRASH_AFTER_JOURNAL", "FERRY_TEST_CRASH_BEFORE_COMMIT"):
    make_db(db)
    jp = os.path.join(T, "crash-%s.json" % hook)
    p = ferry(*move, "--journal", jp, rc=99, env={hook: "1"})
    if checksum(db) != orig_sum:
        fail("%s: catalog changed by a crashed move" % hook)
    if json.load(open(jp))["state"] != "prepared":
        fail("%s: journal not left prepared" % hook)
    p = ferry("--rollback", jp, "--one-lock", LOCK)
    if "nothing to roll back" not in p.stdout or checksum(db) != orig_sum:
        fail("%s: rollback after crash: %s" % (hook, p.stdout))
    print("ok: %s leaves the catalog unchanged" % hook)

# Default journal location: timestamped file in $FERRY_STATE_DIR/journal, path printed.
make_db(db)
p = ferry(*move)
line = [l for l in p.stdout.splitlines() if l.startswith("journal: ")]
if not line or not line[0][9:].startswith(os.path.join(T, "state", "journal", "vm-43-")):
    fail("default journal path not printed/used: " + p.stdout)
if not os.path.exists(line[0][9:]):
    fail("default journal missing")
print("ok: default journal " + line[0][9:])
