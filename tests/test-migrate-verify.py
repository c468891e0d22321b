# Issue 11 point 1: after the switch every edit is read back from the objects as oned serves
# them (one.vm.info, one.image.info, one.datastore.info), not just the first one; one.vm.info
# returns EVERY history record, reloaded from the history table (VirtualMachine::select), so the
# history edit is checked on the record with the last SEQ.  The stand-in's --stale-history plays
# an oned whose history table did not get ferry's write: the move must not be reported
# switched.  VM 42 has two history records (seq 0 and 1).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import T, fail, ferry, make_catalog
from test_xmlrpc_helpers import start_responder

for variant in ("6.8", "7.0"):
    db = make_catalog(os.path.join(T, "ok-%s.db" % variant), variant)
    uri, session = start_responder(db)
    p = ferry("--catalog", uri, "--auth", session, "--storage", "none", "--vm", 42,
              "--to-cluster", 100, "--journal", os.path.join(T, "ok-%s.json" % variant))
    if "switched:" not in p.stdout:
        fail("move of a VM with two history records: " + p.stdout)
    print("ok: %s: every edit of VM 42 read back from one.vm.info (2 history records)" % variant)

    db = make_catalog(os.path.join(T, "stale-%s.db" % variant), variant)
    uri, session = start_responder(db, "--stale-history")
    p = ferry("--catalog", uri, "--auth", session, "--storage", "none", "--vm", 42,
              "--to-cluster", 100, "--journal", os.path.join(T, "stale-%s.json" % variant), rc=1)
    want = "/VM/HISTORY_RECORDS/HISTORY[SEQ=1]/DS_ID lacks 100"
    if "switched:" in p.stdout or want not in p.stderr or \
            "oned does not serve every edit" not in p.stderr:
        fail("%s: stale history reported switched:\n%s\n%s" % (variant, p.stdout, p.stderr))
    print("ok: %s: refused to call it switched: %s" % (variant, p.stderr.strip().splitlines()[0]))
