# ferry migrate on a real MariaDB server (mariadbd started here on a unix socket, stopped by
# PID): the fixture loaded with MySQL DDL, the move of VM 43 to cluster 100 makes exactly the
# README's edits; dry-run, crash before COMMIT, rollback, MyISAM and connection refusals.
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (LOCK, T, check_edits, checksum_mariadb, dump_rows_mariadb, edit_set,
                         fail, ferry, ferry_edit_set, load_fixture_mariadb, mariadb, start_mariadb,
                         vm43_to_cluster100_edits)

p = ferry("--help")
sock = start_mariadb()
load_fixture_mariadb(sock, "one")
cat = "mysql://root@localhost/one?socket=" + sock
move = ["--catalog", cat, "--one-lock", LOCK, "--storage", "none", "--vm", 43, "--to-cluster",
        100, "--force"]
orig_rows, orig_sum = dump_rows_mariadb(sock, "one"), checksum_mariadb(sock, "one")

p = ferry(*move, "--dry-run")
if "dry run: 19 edit(s) planned" not in p.stdout or checksum_mariadb(sock, "one") != orig_sum:
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
