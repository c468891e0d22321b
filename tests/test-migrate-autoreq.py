# ferry migrate --automatic-requirements: besides the README's edits, AUTOMATIC_REQUIREMENTS
# (CLUSTER_ID = N) and AUTOMATIC_DS_REQUIREMENTS ("CLUSTERS/ID" @> N) name the target cluster
# (oned recomputes them on create/migrate/release, not on resume); the rest of each
# expression is kept.  Checked on SQLite 6.8 and 6.10 (body_json kept in step); without the
# flag they are untouched (test-migrate-sqlite checks the exact README set).
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (LOCK, T, Edit, check_edits, dump_rows, edit_set, fail, ferry,
                         ferry_edit_set, make_db, vm43_to_cluster100_edits)

AUTO = [("/VM/TEMPLATE/AUTOMATIC_REQUIREMENTS",
         "(CLUSTER_ID = 100) & !(PUBLIC_CLOUD = YES) & !(PIN_POLICY = PINNED)"),
        ("/VM/TEMPLATE/AUTOMATIC_DS_REQUIREMENTS",
         '("CLUSTERS/ID" @> 100) & (TM_MAD = "ceph")')]

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
