# A stand-in for oned's XML-RPC API, for tests only.
#
# oned cannot run here (no OpenNebula packages, and it needs its whole daemon stack), so this
# responder implements EXACTLY the four calls ferry's xmlrpc catalog relies on, over a real
# SQLite catalog file, with oned's answer formats:
#   one.system.sqlquery(session, sql)      -> [true, "<SQL_COMMAND><QUERY>..</QUERY><RESULT>
#                                              <ROW><col><![CDATA[v]]></col>..</ROW>..</RESULT>
#                                              </SQL_COMMAND>", 0]; a value starting with '<'
#                                              is sent base64-encoded as <col64>
#   one.system.sql(session, sql, federate) -> [true, 0, 0]
#   one.vm.info(session, id)               -> [true, body, 0]
#   one.vm.action(session, action, id)     -> [true, id, 0] (poweroff, undeploy, resume, ...)
# Failures answer [false, message, code] as oned does.  Fault injection for tests:
#   --lie-on-sql N : the N-th one.system.sql call answers success WITHOUT writing (like
#                    onedb's exit code, which does not prove the write happened).
#   --action-log FILE : append "ACTION VMID" for each one.vm.action call.
# Usage: one_xmlrpc_responder.py DB PORTFILE SESSION [--lie-on-sql N] [--action-log FILE]
import argparse
import base64
import os
import re
import sqlite3
import sys
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

ap = argparse.ArgumentParser()
ap.add_argument("db")
ap.add_argument("port_file")
ap.add_argument("session")
ap.add_argument("--lie-on-sql", type=int, default=0)
ap.add_argument("--action-log")
args = ap.parse_args()
db_path, port_file, session, lie_on = args.db, args.port_file, args.session, args.lie_on_sql
sql_calls = 0
AUTH_FAILED = [False, "[one.system.sqlquery] User couldn't be authenticated, aborting call.",
               0x0100]


def db():
    c = sqlite3.connect(db_path, isolation_level=None)  # autocommit, like oned's exec_wr
    return c


def sqlquery(sess, sql):
    if sess != session:
        return AUTH_FAILED
    try:
        cur = db().execute(sql)
    except sqlite3.Error as e:
        return [False, "[one.system.sqlquery] SQL error: %s" % e, 0x0800]
    names = [d[0] for d in cur.description]
    rows = []
    for row in cur:
        cells = []
        for name, v in zip(names, row):
            v = "" if v is None else str(v)
            if v.startswith("<"):
                cells.append("<%s64><![CDATA[%s]]></%s64>"
                             % (name, base64.b64encode(v.encode()).decode(), name))
            else:
                cells.append("<%s><![CDATA[%s]]></%s>" % (name, v, name))
        rows.append("<ROW>" + "".join(cells) + "</ROW>")
    return [True, "<SQL_COMMAND><QUERY><![CDATA[%s]]></QUERY><RESULT>%s</RESULT></SQL_COMMAND>"
            % (sql, "".join(rows)), 0]


def sql_exec(sess, sql, federate):
    global sql_calls
    if sess != session:
        return AUTH_FAILED
    sql_calls += 1
    if sql_calls == lie_on:
        return [True, 0, 0]
    try:
        db().execute(sql)
    except sqlite3.Error as e:
        return [False, "[one.system.sql] SQL error: %s" % e, 0x0800]
    return [True, 0, 0]


def vm_info(sess, vid):
    if sess != session:
        return AUTH_FAILED
    row = db().execute("SELECT body FROM vm_pool WHERE oid = ?", (vid,)).fetchone()
    if not row:
        return [False, "[one.vm.info] Error getting virtual machine [%d]." % vid, 0x0400]
    return [True, row[0], 0]


ACTIONS = {"poweroff": (8, 0), "poweroff-hard": (8, 0), "undeploy": (9, 0),
           "undeploy-hard": (9, 0), "suspend": (5, 0), "resume": (3, 3)}


def vm_action(sess, action, vid):
    if sess != session:
        return AUTH_FAILED
    if action not in ACTIONS:
        return [False, "[one.vm.action] Wrong action: %s" % action, 0x0800]
    state, lcm = ACTIONS[action]
    if args.action_log:
        with open(args.action_log, "a") as f:
            f.write("%s %d\n" % (action, vid))
    c = db()
    row = c.execute("SELECT body FROM vm_pool WHERE oid = ?", (vid,)).fetchone()
    if not row:
        return [False, "[one.vm.action] Error getting virtual machine [%d]." % vid, 0x0400]
    body = re.sub(r"<STATE>\d+</STATE>", "<STATE>%d</STATE>" % state, row[0], count=1)
    body = re.sub(r"<LCM_STATE>\d+</LCM_STATE>", "<LCM_STATE>%d</LCM_STATE>" % lcm, body, count=1)
    c.execute("UPDATE vm_pool SET state = ?, lcm_state = ?, body = ? WHERE oid = ?",
              (state, lcm, body, vid))
    return [True, vid, 0]


class Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)

    def log_message(self, *args):
        pass


server = SimpleXMLRPCServer(("127.0.0.1", 0), requestHandler=Handler, logRequests=False,
                            allow_none=False)
server.register_function(sqlquery, "one.system.sqlquery")
server.register_function(sql_exec, "one.system.sql")
server.register_function(vm_info, "one.vm.info")
server.register_function(vm_action, "one.vm.action")
tmp = port_file + ".tmp"
with open(tmp, "w") as f:
    f.write("%d\n" % server.server_address[1])
os.rename(tmp, port_file)  # the test waits for this file: no fixed sleep
server.serve_forever()
