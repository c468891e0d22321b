# ferry migrate --automatic-requirements: besides the README's edits, AUTOMATIC_REQUIREMENTS
# (CLUSTER_ID = N), AUTOMATIC_DS_REQUIREMENTS ("CLUSTERS/ID" @> N) and AUTOMATIC_NIC_REQUIREMENTS
# (the same rule: issue 11 point 10) name the target cluster; the rest of each expression is
# kept.  oned recomputes all three itself when an UNDEPLOYED or STOPPED VM is resumed
# (DispatchManager::resume -> VirtualMachine::automatic_requirements), which the help text and
# docs now say.  Checked on SQLite 6.8 and 6.10 (body_json kept in step); without the flag they
# are untouched (test-migrate-sqlite checks the exact README set).
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (LOCK, T, Edit, check_edits, dump_rows, edit_set, fail, ferry,
                         ferry_edit_set, make_db, vm43_to_cluster100_edits)

AUTO = [("/VM/TEMPLATE/AUTOMATIC_REQUIREMENTS",
         "(CLUSTER_ID = 100) & !(PUBLIC_CLOUD = YES) & !(PIN_POLICY = PINNED)"),
        ("/VM/TEMPLATE/AUTOMATIC_DS_REQUIREMENTS",
         '("CLUSTERS/ID" @> 100) & (TM_MAD = "ceph")'),
        ("/VM/TEMPLATE/AUTOMATIC_NIC_REQUIREMENTS", '("CLUSTERS/ID" @> 100)')]

for variant in ("6.8", "6.10"):
    db = make_db(os.path.join(T, "one-%s.db" % variant), variant)
    before = dump_rows(db)
    p = ferry("--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", "43",
              "--to-cluster", "100", "--force", "--automatic-requirements", "--json",
              "--journal", os.path.join(T, "j-%s.json" % variant))
    report = json.loads(p.stdout)
    json_col = variant == "6.10"
    expected = vm43_to_cluster100_edits(body_json=json_col)
    cols = ["body"] + (["body_json"] if json_col else [])
    for col in cols:
        for path, value in AUTO:
            expected.append(Edit("vm_pool", (43,), col, "set", path, value))
    if ferry_edit_set(report) != edit_set(expected):
        fail("%s: reported edits differ:\n%s" % (variant, "\n".join(map(str, ferry_edit_set(report)))))
    check_edits(before, dump_rows(db), expected)
    print("ok: %s: AUTOMATIC_(DS_)REQUIREMENTS retargeted, everything else exact" % variant)

# Point 10: what oned does on resume, said where the operator reads it.
p = ferry("--help")
if "oned does not recompute them on resume" in p.stdout or \
        "AUTOMATIC_(DS_|NIC_)REQUIREMENTS" not in p.stdout or \
        "oned recomputes them when an\n" not in p.stdout or \
        "UNDEPLOYED or STOPPED VM is resumed" not in p.stdout:
    fail("--help still contradicts DispatchManager::resume:\n" + p.stdout)
doc = open(os.path.join(os.environ["SRCDIR"], "docs", "migrate.md")).read()
for wrong in ("not when an undeployed or powered-off VM is resumed",
              "layout kept by re-dumping"):
    if wrong in doc:
        fail("docs/migrate.md still says: " + wrong)
for right in ("DispatchManager::resume", "AUTOMATIC_NIC_REQUIREMENTS",
              "src/datastore/Datastore.cc"):
    if right not in doc:
        fail("docs/migrate.md does not cite " + right)
print("ok: --help and docs/migrate.md follow DispatchManager::resume")
