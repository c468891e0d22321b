# Issue 11 point 7: a POWEROFF VM is not moved behind oned's back.  Resuming a powered-off VM
# restarts it on the same host with a copy of its last history record
# (LifeCycleManager::trigger_restart + VirtualMachine::cp_history, src/lcm/LifeCycleActions.cc):
# no scheduler, no prolog — after a catalog move it would boot in the old cluster.  So:
# - sqlite:/mysql: (oned stopped) refuse it and say why (MariaDB: test-migrate-mariadb.py);
# - xmlrpc:// undeploys it first through oned (one.vm.action undeploy: POWEROFF ->
#   EPILOG_UNDEPLOY -> UNDEPLOYED), switches, and leaves it UNDEPLOYED; the resume that
#   follows goes through the scheduler (PENDING, a new history record on cluster 100's host).
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import LOCK, T, expect_refusal, fail, ferry, make_catalog, set_state, sql
from test_xmlrpc_helpers import start_responder, wait_vm_state

for variant in ("5.12", "6.8", "6.10", "7.0"):
    db = make_catalog(os.path.join(T, "one-%s.db" % variant), variant)
    set_state(db, 42, 8, 0)  # POWEROFF
    expect_refusal(db, "VM 42 (web-01) is POWEROFF: oned resumes a powered-off VM on the same "
                   "host with a copy of its last history record (no scheduling, no prolog)",
                   "--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm",
                   42, "--to-cluster", 100)

# Through oned: undeployed first, switched, left UNDEPLOYED.
db = make_catalog(os.path.join(T, "xmlrpc.db"), "6.8")
set_state(db, 42, 8, 0)
log = os.path.join(T, "actions")
uri, session = start_responder(db, "--action-log", log)
move = ["--catalog", uri, "--auth", session, "--storage", "none", "--vm", 42, "--to-cluster", 100]
p = ferry(*move, "--dry-run")
if "VM 42 is POWEROFF: it would be undeployed through oned first" not in p.stdout or \
        os.path.exists(log):
    fail("dry run: " + p.stdout)
p = ferry(*move, "--journal", os.path.join(T, "j.json"))
if open(log).read() != "undeploy 42\n":
    fail("expected exactly one.vm.action undeploy: " + open(log).read())
if sql(db, "SELECT state, lcm_state FROM vm_pool WHERE oid = 42") != [(9, 0)]:
    fail("VM 42 not left UNDEPLOYED")
h = sql(db, "SELECT body FROM history WHERE vid = 42 AND seq = 1")[0][0]
if "<DS_ID>100</DS_ID>" not in h or "<ACTION>5</ACTION>" not in h:
    fail("history seq 1 not the undeployed, switched record: " + h[:400])
print("ok: POWEROFF VM undeployed through oned, switched, left UNDEPLOYED")

# The resume oned then does: scheduled on cluster 100 with a new record (not cp_history).
import xmlrpc.client
xmlrpc.client.ServerProxy(uri.replace("xmlrpc://", "http://")).one.vm.action(session, "resume",
                                                                              42)
wait_vm_state(db, 42, 3, 3)
h = sql(db, "SELECT body FROM history WHERE vid = 42 AND seq = 2")[0][0]
if not re.search(r"<HOSTNAME>host-2</HOSTNAME><HID>2</HID><CID>100</CID>", h) or \
        "<DS_ID>100</DS_ID>" not in h:
    fail("resumed VM not scheduled on cluster 100: " + h[:400])
print("ok: resumed: PENDING, then deployed on cluster 100's host with history seq 2")
