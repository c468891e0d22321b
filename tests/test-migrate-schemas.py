# ferry migrate across catalog schema versions: 5.12 and 6.8 (search_token), 6.10 (body_json,
# rewritten with the body), 7.x (body_json + resched).  The same move of VM 43 to cluster 100
# makes the README's edits in each; body_json follows the body; rollback is byte-exact.
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (LOCK, T, check_edits, checksum, dump_rows, edit_set, expect_refusal,
                         fail, ferry, ferry_edit_set, make_db, sql, vm43_to_cluster100_edits)

for variant in ("5.12", "6.8", "6.10", "7.0"):
    db = make_db(os.path.join(T, "one-%s.db" % variant), variant)
    has_json = variant in ("6.10", "7.0")
    before, before_sum = dump_rows(db), checksum(db)
    journal = os.path.join(T, "j-%s.json" % variant)
    p = ferry("--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 43,
              "--to-cluster", 100, "--force", "--json", "--journal", journal)
    expected = vm43_to_cluster100_edits(body_json=has_json)
    if ferry_edit_set(json.loads(p.stdout)) != edit_set(expected):
        fail("%s: reported edits differ: %s" % (variant, ferry_edit_set(json.loads(p.stdout))))
    check_edits(before, dump_rows(db), expected)
    if json.load(open(journal))["schema"] != variant + ".0":
        fail("%s: journal schema" % variant)
    if variant == "7.0" and sql(db, "SELECT resched FROM vm_pool WHERE oid = 43") != [(0,)]:
        fail("resched column touched")
    ferry("--rollback", journal, "--one-lock", LOCK)
    if checksum(db) != before_sum:
        fail("%s: rollback not byte-exact" % variant)
    print("ok: schema %s: exact edits%s, byte-exact rollback"
          % (variant, " incl. body_json" if has_json else ""))

# Unknown versions and versions that contradict the table layout are refused.
db = make_db(os.path.join(T, "odd.db"))
move = ["--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 42,
        "--to-cluster", 100]
for version in ("5.10.0", "6.9.0", "8.0.0", "banana"):
    sql(db, "UPDATE local_db_versioning SET version = ?", (version,))
    want = ("cannot parse schema version 'banana'" if version == "banana" else
            "catalog schema version %s is not one ferry knows" % version)
    expect_refusal(db, want, *move)
sql(db, "UPDATE local_db_versioning SET version = '6.10.0'")
expect_refusal(db, "schema version 6.10.0 but vm_pool lacks a body_json column", *move)
sql(db, "UPDATE local_db_versioning SET version = '7.2.1'")
expect_refusal(db, "schema version 7.2.1 but vm_pool lacks a body_json column", *move)
db = make_db(os.path.join(T, "odd7.db"), "6.10")
sql(db, "UPDATE local_db_versioning SET version = '7.0.0'")
expect_refusal(db, "schema version 7.0.0 but vm_pool lacks a resched column",
               "--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 42,
               "--to-cluster", 100)
sql(db, "DROP TABLE local_db_versioning")
sql(db, "DROP TABLE db_versioning")
expect_refusal(db, "no local_db_versioning/db_versioning version: not an OpenNebula database?",
               "--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 42,
               "--to-cluster", 100)

# A body_json whose layout ferry does not understand is refused, not left stale.
db = make_db(os.path.join(T, "oddjson.db"), "6.10")
sql(db, "UPDATE vm_pool SET body_json = replace(body_json, '\"DATASTORE_ID\"', '\"datastore_id\"')")
expect_refusal(db, "vm_pool 43 body_json: no /VM/TEMPLATE/DISK[DISK_ID=0]/DATASTORE_ID although "
               "the body has it", "--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage",
               "none", "--vm", 43, "--to-cluster", 100, "--force")
sql(db, "UPDATE vm_pool SET body_json = 'not json'")
expect_refusal(db, "vm_pool oid 43 body_json: not JSON", "--catalog", "sqlite:" + db,
               "--one-lock", LOCK, "--storage", "none", "--vm", 43, "--to-cluster", 100,
               "--force")
