# Issue 11 point 9: "oned is stopped" is decided as onedb decides it (src/onedb/onedb.rb
# one_not_running): no lock file AND nothing answering on oned's XML-RPC endpoint (ONE_XMLRPC,
# ~/.one/one_endpoint, http://localhost:2633/RPC2, or --one-endpoint).  A running oned — here
# tests/one_xmlrpc_responder.py on a free port — makes sqlite: (and mysql:, see
# test-migrate-mariadb.py) refuse and change nothing; otherwise a warning says that a remote
# MySQL or an HA setup needs oned stopped on every front-end.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import LOCK, T, checksum, expect_refusal, fail, ferry, make_catalog
from test_xmlrpc_helpers import start_responder

db = make_catalog(os.path.join(T, "one.db"))
other = make_catalog(os.path.join(T, "oned.db"))  # what the running oned serves
uri, session = start_responder(other)
endpoint = uri.replace("xmlrpc://", "http://")
move = ["--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 42,
        "--to-cluster", 100]

# Found through ONE_XMLRPC (onedb's OpenNebula::Client order)...
before = checksum(db)
p = ferry(*move, rc=1, env={"ONE_XMLRPC": endpoint})
if "oned answers on %s: stop oned first" % endpoint not in p.stderr or checksum(db) != before:
    fail("running oned (ONE_XMLRPC) not refused: " + p.stderr)
print("ok: refused: " + p.stderr.strip())
# ... through ~/.one/one_endpoint ...
home = os.path.join(T, "home")
os.makedirs(os.path.join(home, ".one"))
open(os.path.join(home, ".one", "one_endpoint"), "w").write(endpoint + "\n")
env = dict(os.environ, HOME=home)
env.pop("ONE_XMLRPC", None)
import subprocess
p = subprocess.run([os.environ["FERRY"], "migrate"] + [str(a) for a in move], env=env,
                   capture_output=True, text=True)
if p.returncode != 1 or "oned answers on %s" % endpoint not in p.stderr or \
        checksum(db) != before:
    fail("running oned (~/.one/one_endpoint) not refused: %d %s" % (p.returncode, p.stderr))
print("ok: refused through ~/.one/one_endpoint")
# ... and --one-endpoint; an answer that is an authentication failure counts too.
expect_refusal(db, "oned answers on %s" % endpoint, *move, "--one-endpoint", endpoint)
# A rollback is a write too.
journal = os.path.join(T, "j.json")
ferry(*move, "--journal", journal)
moved = checksum(db)
p = ferry("--rollback", journal, "--one-lock", LOCK, rc=1, env={"ONE_XMLRPC": endpoint})
if "oned answers on" not in p.stderr or checksum(db) != moved:
    fail("rollback with oned running: " + p.stderr)
print("ok: rollback refused while oned answers")
# Nothing listening: the move runs, with the warning about other front-ends.
p = ferry("--rollback", journal, "--one-lock", LOCK)
if "with a remote MySQL or an HA setup oned must be stopped on every front-end" not in p.stderr:
    fail("no warning about remote MySQL / HA: " + p.stderr)
if checksum(db) != before:
    fail("rollback")
# --one-endpoint none skips the probe (and says nothing it cannot know).
ferry(*move, "--one-endpoint", "none", "--journal", os.path.join(T, "j2.json"),
      env={"ONE_XMLRPC": endpoint})
print("ok: warning printed when nothing answers; --one-endpoint none skips the probe")
