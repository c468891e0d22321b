# Start tests/one_xmlrpc_responder.py (the stand-in for oned's XML-RPC API) on a free port.
import atexit
import os
import subprocess
import sys
import time

from lib_migrate import T, fail

HERE = os.path.dirname(os.path.abspath(__file__))
SESSION = "oneadmin:opensesame"


def start_responder(db, *extra):
    """(xmlrpc:// URI, session) of a responder serving `db`; stopped (by PID) at exit."""
    port_file = os.path.join(T, "port.%d" % len(os.listdir(T)))
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "one_xmlrpc_responder.py"), db,
                             port_file, SESSION] + list(extra))
    atexit.register(lambda: (proc.terminate(), proc.wait()))
    for _ in range(400):  # wait for the port file (written atomically once listening)
        if os.path.exists(port_file):
            return "xmlrpc://127.0.0.1:%s/RPC2" % open(port_file).read().strip(), SESSION
        if proc.poll() is not None:
            fail("responder exited")
        time.sleep(0.05)
    fail("responder did not start")


def wait_vm_state(db, vm, state, lcm):
    """Poll until oned's stand-in has finished (drivers, scheduler); 30 s at most."""
    import sqlite3
    for _ in range(300):
        c = sqlite3.connect(db)
        now = c.execute("SELECT state, lcm_state FROM vm_pool WHERE oid = ?", (vm,)).fetchone()
        c.close()
        if now == (state, lcm):
            return
        time.sleep(0.1)
    fail("VM %d is %s, not %d/%d" % (vm, now, state, lcm))
