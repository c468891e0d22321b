# A stand-in for oned's XML-RPC API, for tests only.
#
# oned cannot run here (no OpenNebula packages, and it needs its whole daemon stack), so this
# responder answers the calls ferry makes, over a real SQLite catalog file, the way oned's code
# does (github OpenNebula/one, release-6.8.0; 6.10/7.0 identical where noted).  Each answer
# follows these sources:
#
#   one.system.sqlquery(s, sql)   src/rm/RequestManagerSystem.cc SystemSqlQuery: oneadmin only;
#       <SQL_COMMAND><QUERY><![CDATA[sql]]></QUERY><RESULT><ROW><c><![CDATA[v]]></c>..</ROW>
#       </RESULT></SQL_COMMAND>; a value starting with '<' as <c64><![CDATA[base64]]></c64>
#       (select_cb::callback).  A SQL NULL is streamed as a null char*, which sets badbit on
#       oned's ostringstream: the answer is cut right after "<c><![CDATA[" (and is not XML).
#   one.system.sql(s, sql, fed)    SystemSql: oneadmin only; exec_wr of the text as given;
#       [true, 0, 0].  --backend mysql: the text is run the way a MySQL server reads it
#       (backslash escapes in '...' literals, CONVERT(X'..' USING utf8mb4)).
#   one.system.config(s)           SystemConfig: <OPENNEBULA_CONFIGURATION> with DB/BACKEND,
#       DATASTORE_LOCATION and INHERIT_DATASTORE_ATTR (share/etc/oned.conf defaults of the
#       catalog's version); --no-config: answers a failure, as an oned refusing it.
#   one.system.version(s)          SystemVersion: the version string.
#   one.vm.info(s, id)             RequestManagerInfo + VirtualMachineInfo::to_xml:
#       VirtualMachine::select reloads EVERY history record 0..SEQ from the history table
#       (src/vm/VirtualMachine.cc select), to_xml_extended(xml, 2, true) writes them all
#       (History::to_xml without the embedded VM), LAST_POLL/MONITORING from the last
#       vm_monitoring row when that table has one.  (The scheduled actions oned adds from its
#       sched-action pool are not emulated: the test catalogs have none.)
#   one.image.info / one.datastore.info   the object's to_xml (the row's body).
#   one.vm.action(s, action, id)   src/dm/DispatchManagerActions.cc:
#       undeploy[-hard]: POWEROFF or ACTIVE/RUNNING|UNKNOWN (DispatchManager::undeploy), then
#         LifeCycleManager::trigger_undeploy (src/lcm/LifeCycleActions.cc): RUNNING ->
#         SHUTDOWN_UNDEPLOY (3/29), action UNDEPLOY 5 (hard 6); POWEROFF -> EPILOG_UNDEPLOY
#         (3/30); the "drivers" then finish in the background: UNDEPLOYED (9/0), history ETIME/
#         EETIME stamped.
#       resume: DispatchManager::resume: STOPPED/UNDEPLOYED -> VirtualMachine::
#         automatic_requirements (AUTOMATIC_REQUIREMENTS, AUTOMATIC_DS_REQUIREMENTS,
#         AUTOMATIC_NIC_REQUIREMENTS, every DISK's CLUSTER_ID from its DATASTORE_ID's clusters),
#         PENDING (1/0); the "scheduler" (a thread here, mm_sched/schedm in OpenNebula) then
#         deploys it: a host of a cluster the requirements allow, a system datastore of that
#         cluster with the VM's TM_MAD_SYSTEM, a NEW history record seq+1 (PROLOG_RESUME 3/9,
#         then RUNNING 3/3).  POWEROFF -> LifeCycleManager::trigger_restart: BOOT_POWEROFF,
#         VirtualMachine::cp_history (a copy of the last record: same host, same DS_ID,
#         seq+1), RUNNING — no scheduling.  Other states: "This action is not available for
#         state ...".
#   Every VM write rewrites body, short_body (the embedded record, STATE/LCM_STATE) and, on
#   6.10+, body_json (VirtualMachine::insert_replace; body_json from tests/one_json.py).
# Failures answer [false, message, code] as oned does (Request::failure_response).
#
# Fault injection for tests:
#   --lie-on-sql N     the N-th one.system.sql answers success WITHOUT writing (like onedb's
#                      exit code, which does not prove the write happened).
#   --stale-history    one.vm.info serves the history records as they were at start (an oned
#                      whose history table did not get ferry's write).
#   --action-log FILE  append "ACTION VMID" for each one.vm.action call.
# Usage: one_xmlrpc_responder.py DB PORTFILE SESSION [options]
import argparse
import base64
import os
import re
import sqlite3
import sys
import threading
import time
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from one_json import body_json_of  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("db")
ap.add_argument("port_file")
ap.add_argument("session")
ap.add_argument("--lie-on-sql", type=int, default=0)
ap.add_argument("--action-log")
ap.add_argument("--backend", choices=("sqlite", "mysql"), default="sqlite")
ap.add_argument("--no-config", action="store_true")
ap.add_argument("--stale-history", action="store_true")
args = ap.parse_args()
session = args.session
sql_calls = 0
lock = threading.RLock()  # oned serialises writers per object; one big lock here


def auth_failed(method):
    return [False, "[%s] User couldn't be authenticated, aborting call." % method, 0x0100]


def db():
    return sqlite3.connect(args.db, isolation_level=None)  # autocommit, like oned's exec_wr


def version():
    return db().execute("SELECT version FROM local_db_versioning ORDER BY oid DESC LIMIT 1"
                        ).fetchone()[0]


# ---- one.system.sqlquery / sql / config / version ----

def sqlquery(sess, sql):
    if sess != session:
        return auth_failed("one.system.sqlquery")
    try:
        with lock:
            cur = db().execute(sql)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
    except sqlite3.Error as e:
        return [False, "[one.system.sqlquery] SQL error: %s" % e, 0x0800]
    out = []
    for row in rows:
        out.append("<ROW>")
        for name, v in zip(names, row):
            if v is None:  # null char* into oned's ostringstream: badbit, the rest is lost
                out.append("<%s><![CDATA[" % name)
                return [True, "<SQL_COMMAND><QUERY><![CDATA[%s]]></QUERY><RESULT>%s</RESULT>"
                        "</SQL_COMMAND>" % (sql, "".join(out)), 0]
            v = str(v)
            if v.startswith("<"):
                out.append("<%s64><![CDATA[%s]]></%s64>"
                           % (name, base64.b64encode(v.encode()).decode(), name))
            else:
                out.append("<%s><![CDATA[%s]]></%s>" % (name, v, name))
        out.append("</ROW>")
    return [True, "<SQL_COMMAND><QUERY><![CDATA[%s]]></QUERY><RESULT>%s</RESULT></SQL_COMMAND>"
            % (sql, "".join(out)), 0]


MYSQL_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a",
                 "\\": "\\", "'": "'", '"': '"'}


def as_mysql_reads_it(sql):
    """The statement a MySQL server (default sql_mode) would run, in SQLite syntax: backslash
    escapes in '...' literals are interpreted, CONVERT(X'..' USING utf8mb4) is a text."""
    sql = re.sub(r"CONVERT\(X'([0-9A-Fa-f]*)' USING utf8mb4\)", r"CAST(X'\1' AS TEXT)", sql)
    out, i = [], 0
    while i < len(sql):
        c = sql[i]
        if c != "'":
            out.append(c)
            i += 1
            continue
        j, lit = i + 1, []
        while j < len(sql):
            if sql[j] == "\\" and j + 1 < len(sql):
                lit.append(MYSQL_ESCAPES.get(sql[j + 1], sql[j + 1]))
                j += 2
            elif sql[j] == "'" and j + 1 < len(sql) and sql[j + 1] == "'":
                lit.append("'")
                j += 2
            elif sql[j] == "'":
                break
            else:
                lit.append(sql[j])
                j += 1
        out.append("'" + "".join(lit).replace("'", "''") + "'")
        i = j + 1
    return "".join(out)


def sql_exec(sess, sql, federate):
    global sql_calls
    if sess != session:
        return auth_failed("one.system.sql")
    sql_calls += 1
    if sql_calls == args.lie_on_sql:
        return [True, 0, 0]
    if args.backend == "mysql":
        sql = as_mysql_reads_it(sql)
    try:
        with lock:
            db().execute(sql)
    except sqlite3.Error as e:
        return [False, "[one.system.sql] SQL error: %s" % e, 0x0800]
    return [True, 0, 0]


INHERIT = {  # share/etc/oned.conf INHERIT_DATASTORE_ATTR
    "5": ["CEPH_HOST", "CEPH_SECRET", "CEPH_KEY", "CEPH_USER", "CEPH_CONF", "CEPH_TRASH",
          "POOL_NAME", "ISCSI_USER", "ISCSI_USAGE", "ISCSI_HOST", "GLUSTER_HOST",
          "GLUSTER_VOLUME", "DISK_TYPE", "ALLOW_ORPHANS", "VCENTER_ADAPTER_TYPE",
          "VCENTER_DISK_TYPE", "VCENTER_DS_REF", "VCENTER_DS_IMAGE_DIR",
          "VCENTER_DS_VOLATILE_DIR", "VCENTER_INSTANCE_ID"],
}
INHERIT["6"] = INHERIT["5"] + ["QCOW2_STANDALONE"]
INHERIT["6.10"] = INHERIT["6"] + ["SPARSE"]
INHERIT["7"] = [a for a in INHERIT["6.10"] if not a.startswith("VCENTER_")] + \
    ["LVM_THIN_ENABLE", "PERSISTENT_SNAPSHOTS"]


def system_config(sess):
    if sess != session:
        return auth_failed("one.system.config")
    if args.no_config:
        return [False, "[one.system.config] Not authorized to perform MANAGE SYSTEM", 0x0200]
    v = version()
    key = "7" if v.startswith("7") else "6.10" if v.startswith("6.10") else v.split(".")[0]
    attrs = "".join("<INHERIT_DATASTORE_ATTR><![CDATA[%s]]></INHERIT_DATASTORE_ATTR>" % a
                    for a in INHERIT[key])
    return [True, "<OPENNEBULA_CONFIGURATION><DATASTORE_LOCATION><![CDATA[/var/lib/one//"
            "datastores]]></DATASTORE_LOCATION><DB><BACKEND><![CDATA[%s]]></BACKEND>"
            "<TIMEOUT><![CDATA[2500]]></TIMEOUT></DB>%s</OPENNEBULA_CONFIGURATION>"
            % (args.backend, attrs), 0]


def system_version(sess):
    if sess != session:
        return auth_failed("one.system.version")
    return [True, version(), 0]


# ---- objects ----

def strip_vm(history_body):
    """History::to_xml(database=false): the record without the VM it embeds in the table."""
    return re.sub(r"<VM>.*</VM>(</HISTORY>)$", r"\1", history_body, flags=re.S)


def served_history(c, vid, upto):
    if args.stale_history:
        rows = [r for r in STALE.get(vid, []) if r[0] <= upto]
    else:
        rows = c.execute("SELECT seq, body FROM history WHERE vid = ? AND seq <= ? ORDER BY seq",
                         (vid, upto)).fetchall()
    return "".join(strip_vm(b) for _, b in rows)


def vm_info(sess, vid):
    if sess != session:
        return auth_failed("one.vm.info")
    with lock:
        c = db()
        row = c.execute("SELECT body FROM vm_pool WHERE oid = ?", (vid,)).fetchone()
        if not row:
            return [False, "[one.vm.info] Error getting virtual machine [%d]." % vid, 0x0400]
        body = row[0]
        m = re.search(r"<HISTORY_RECORDS><HISTORY><OID>\d+</OID><SEQ>(\d+)</SEQ>", body)
        if m:
            recs = served_history(c, vid, int(m.group(1)))
            body = re.sub(r"<HISTORY_RECORDS>.*</HISTORY_RECORDS>",
                          lambda _: "<HISTORY_RECORDS>" + recs + "</HISTORY_RECORDS>", body,
                          count=1, flags=re.S)
        try:
            mon = c.execute("SELECT last_poll, body FROM vm_monitoring WHERE vmid = ? ORDER BY "
                            "last_poll DESC LIMIT 1", (vid,)).fetchone()
        except sqlite3.Error:
            mon = None
        if mon:
            body = re.sub(r"<LAST_POLL>\d*</LAST_POLL>", "<LAST_POLL>%d</LAST_POLL>" % mon[0],
                          body, count=1)
            body = re.sub(r"<MONITORING>.*?</MONITORING>|<MONITORING/>",
                          lambda _: mon[1], body, count=1, flags=re.S)
    return [True, body, 0]


def object_info(table, method, what):
    def info(sess, oid):
        if sess != session:
            return auth_failed(method)
        row = db().execute("SELECT body FROM %s WHERE oid = ?" % table, (oid,)).fetchone()
        if not row:
            return [False, "[%s] Error getting %s [%d]." % (method, what, oid), 0x0400]
        return [True, row[0], 0]
    return info


# ---- the VM object: read, change, write back as oned does ----

def has_column(c, table, col):
    return any(r[1] == col for r in c.execute("PRAGMA table_info(%s)" % table))


def write_vm(c, vid, body, state, lcm):
    """vmpool->update: body, short_body (its embedded record and states) and body_json."""
    short = c.execute("SELECT short_body FROM vm_pool WHERE oid = ?", (vid,)).fetchone()[0]
    for tag, v in (("STATE", state), ("LCM_STATE", lcm)):
        short = re.sub(r"<%s>\d+</%s>" % (tag, tag), "<%s>%d</%s>" % (tag, v, tag), short,
                       count=1)
    h = re.search(r"<HISTORY_RECORDS>(<HISTORY>.*</HISTORY>)</HISTORY_RECORDS>", body, re.S)
    if h:  # History::to_xml_short
        rec = h.group(1)

        def f(t):
            m = re.search(r"<%s>(.*?)</%s>" % (t, t), rec, re.S)
            return m.group(0) if m else "<%s></%s>" % (t, t)
        rec_short = "<HISTORY>" + "".join(f(t) for t in ("OID", "SEQ", "HOSTNAME", "HID", "CID",
                                                          "DS_ID", "VM_MAD", "TM_MAD",
                                                          "ACTION")) + "</HISTORY>"
        short = re.sub(r"<HISTORY_RECORDS>.*</HISTORY_RECORDS>|<HISTORY_RECORDS/>",
                       lambda _: "<HISTORY_RECORDS>" + rec_short + "</HISTORY_RECORDS>", short,
                       count=1, flags=re.S)
    sets, vals = ["body = ?", "short_body = ?", "state = ?", "lcm_state = ?"], \
        [body, short, state, lcm]
    if has_column(c, "vm_pool", "body_json"):
        sets.append("body_json = ?")
        vals.append(body_json_of(body))
    c.execute("UPDATE vm_pool SET %s WHERE oid = ?" % ", ".join(sets), vals + [vid])


def set_states(body, state, lcm):
    old_s = re.search(r"<STATE>(\d+)</STATE>", body).group(1)
    old_l = re.search(r"<LCM_STATE>(\d+)</LCM_STATE>", body).group(1)
    for tag, v in (("STATE", state), ("LCM_STATE", lcm), ("PREV_STATE", old_s),
                   ("PREV_LCM_STATE", old_l)):
        body = re.sub(r"<%s>\d+</%s>" % (tag, tag), "<%s>%s</%s>" % (tag, v, tag), body, count=1)
    return body


def set_field(rec, tag, value):
    return re.sub(r"<%s>[^<]*</%s>" % (tag, tag), "<%s>%s</%s>" % (tag, value, tag), rec, count=1)


def last_history(c, vid):
    return c.execute("SELECT seq, body FROM history WHERE vid = ? ORDER BY seq DESC LIMIT 1",
                     (vid,)).fetchone()


def embed(body, rec):
    rec = strip_vm(rec)
    return re.sub(r"<HISTORY_RECORDS>.*</HISTORY_RECORDS>|<HISTORY_RECORDS/>",
                  lambda _: "<HISTORY_RECORDS>" + rec + "</HISTORY_RECORDS>", body, count=1,
                  flags=re.S)


def vm_snapshot(body):
    """to_xml_extended(vm_xml, 0, false): the VM a history record embeds."""
    return re.sub(r"<HISTORY_RECORDS>.*</HISTORY_RECORDS>", "<HISTORY_RECORDS/>", body,
                  count=1, flags=re.S)


def cdata(tag, v):
    return "<%s><![CDATA[%s]]></%s>" % (tag, v, tag)


def set_cdata(body, tag, value):
    new = cdata(tag, value)
    if re.search(r"<%s><!\[CDATA\[.*?\]\]></%s>" % (tag, tag), body, re.S):
        return re.sub(r"<%s><!\[CDATA\[.*?\]\]></%s>" % (tag, tag), lambda _: new, body,
                      count=1, flags=re.S)
    # absent: Template attributes are in name order
    tmpl = re.search(r"<TEMPLATE>(.*?)</TEMPLATE><USER_TEMPLATE>", body, re.S)
    names = re.findall(r"(?:^|</[A-Z_0-9]+>)<([A-Z_0-9]+)>", tmpl.group(1))
    at = tmpl.end(1)
    for n in names:
        if n > tag:
            at = tmpl.start(1) + tmpl.group(1).index("<%s>" % n)
            break
    return body[:at] + new + body[at:]


def automatic_requirements(c, body):
    """VirtualMachine::automatic_requirements (src/vm/VirtualMachine.cc): recompute DISK and NIC
    CLUSTER_IDs, AUTOMATIC_REQUIREMENTS, AUTOMATIC_DS_REQUIREMENTS, AUTOMATIC_NIC_REQUIREMENTS."""
    clusters, sys_ds = None, None

    def ds_clusters(ds):
        return [r[0] for r in c.execute("SELECT cid FROM cluster_datastore_relation WHERE oid = ? "
                                        "ORDER BY cid", (ds,))]

    def disk(m):
        nonlocal clusters, sys_ds
        d = m.group(0)
        ds = re.search(r"<DATASTORE_ID><!\[CDATA\[(\d+)\]\]></DATASTORE_ID>", d)
        if not ds:
            return d
        cids = ds_clusters(int(ds.group(1)))
        d = re.sub(r"<CLUSTER_ID><!\[CDATA\[[^\]]*\]\]></CLUSTER_ID>",
                   cdata("CLUSTER_ID", ",".join(map(str, cids))), d, count=1)
        clusters = set(cids) if clusters is None else clusters & set(cids)
        body_ds = c.execute("SELECT body FROM datastore_pool WHERE oid = ?",
                            (int(ds.group(1)),)).fetchone()
        comp = re.search(r"<COMPATIBLE_SYS_DS><!\[CDATA\[([^\]]*)\]\]>", body_ds[0]) \
            if body_ds else None
        if comp and comp.group(1):
            ids = {int(x) for x in comp.group(1).split(",") if x}
            sys_ds = ids if sys_ds is None else sys_ds & ids
        return d

    def nic(m):
        nonlocal clusters
        n = m.group(0)
        net = re.search(r"<NETWORK_ID><!\[CDATA\[(\d+)\]\]></NETWORK_ID>", n)
        if not net:
            return n
        cids = [r[0] for r in c.execute("SELECT cid FROM cluster_network_relation WHERE oid = ? "
                                        "ORDER BY cid", (int(net.group(1)),))]
        n = re.sub(r"<CLUSTER_ID><!\[CDATA\[[^\]]*\]\]></CLUSTER_ID>",
                   cdata("CLUSTER_ID", ",".join(map(str, cids))), n, count=1)
        clusters = set(cids) if clusters is None else clusters & set(cids)
        return n
    body = re.sub(r"<DISK>.*?</DISK>", disk, body, flags=re.S)
    body = re.sub(r"<NIC>.*?</NIC>", nic, body, flags=re.S)
    cl = sorted(clusters or [])
    req = ("(" + " | ".join("CLUSTER_ID = %d" % i for i in cl) + ") & !(PUBLIC_CLOUD = YES)"
           if cl else "!(PUBLIC_CLOUD = YES)") + " & !(PIN_POLICY = PINNED)"
    ds_req = nic_req = None
    if cl or sys_ds:
        parts = []
        if cl:
            nic_req = "(" + " | ".join('"CLUSTERS/ID" @> %d' % i for i in cl) + ")"
            parts.append(nic_req)
        if sys_ds:
            parts.append("(" + " | ".join('"ID" @> %d' % i for i in sorted(sys_ds)) + ")")
        ds_req = " & ".join(parts)
        tsys = re.search(r"<TM_MAD_SYSTEM><!\[CDATA\[([^\]]*)\]\]></TM_MAD_SYSTEM>", body)
        if tsys:
            ds_req += ' & (TM_MAD = "%s")' % tsys.group(1).strip()
    body = set_cdata(body, "AUTOMATIC_REQUIREMENTS", req)
    if ds_req:
        body = set_cdata(body, "AUTOMATIC_DS_REQUIREMENTS", ds_req)
    if nic_req:
        body = set_cdata(body, "AUTOMATIC_NIC_REQUIREMENTS", nic_req)
    return body


def schedule(c, vid, body):
    """mm_sched's pick for a PENDING VM, then VirtualMachineDeploy + prolog: a host and a system
    datastore of a cluster the requirements allow, a new history record."""
    req = re.search(r"<AUTOMATIC_REQUIREMENTS><!\[CDATA\[(.*?)\]\]>", body, re.S).group(1)
    ds_req = re.search(r"<AUTOMATIC_DS_REQUIREMENTS><!\[CDATA\[(.*?)\]\]>", body, re.S)
    ds_req = ds_req.group(1) if ds_req else ""
    tm = re.search(r'TM_MAD = "([^"]*)"', ds_req)
    ids = [int(i) for i in re.findall(r'"ID" @> (\d+)', ds_req)]
    for cid in [int(i) for i in re.findall(r"CLUSTER_ID = (\d+)", req)]:
        cbody = c.execute("SELECT body FROM cluster_pool WHERE oid = ?", (cid,)).fetchone()[0]
        hosts = re.findall(r"<ID>(\d+)</ID>", re.search(r"<HOSTS>(.*?)</HOSTS>", cbody).group(1))
        for (oid, dsb) in c.execute("SELECT d.oid, d.body FROM datastore_pool d JOIN "
                                    "cluster_datastore_relation r ON r.oid = d.oid WHERE "
                                    "r.cid = ? ORDER BY d.oid", (cid,)).fetchall():
            if "<TYPE>1</TYPE>" not in dsb or (ids and oid not in ids):
                continue
            dtm = re.search(r"<TM_MAD><!\[CDATA\[([^\]]*)\]\]></TM_MAD>", dsb).group(1)
            if tm and dtm != tm.group(1):
                continue
            if hosts:
                return cid, int(hosts[0]), oid, dtm
    return None


def new_record(c, vid, seq, hid, cid, ds, tm, body, now, action=0):
    rec = ("<HISTORY><OID>%d</OID><SEQ>%d</SEQ><HOSTNAME>host-%d</HOSTNAME><HID>%d</HID>"
           "<CID>%d</CID><STIME>%d</STIME><ETIME>0</ETIME><VM_MAD><![CDATA[kvm]]></VM_MAD>"
           "<TM_MAD><![CDATA[%s]]></TM_MAD><DS_ID>%d</DS_ID><PSTIME>%d</PSTIME><PETIME>%d"
           "</PETIME><RSTIME>%d</RSTIME><RETIME>0</RETIME><ESTIME>0</ESTIME><EETIME>0</EETIME>"
           "<ACTION>%d</ACTION><UID>0</UID><GID>0</GID><REQUEST_ID>-1</REQUEST_ID>"
           % (vid, seq, hid, hid, cid, now, tm, ds, now, now, now, action))
    c.execute("INSERT INTO history (vid, seq, body, stime, etime) VALUES (?, ?, ?, ?, 0)",
              (vid, seq, rec + vm_snapshot(body) + "</HISTORY>", now))
    return rec + "</HISTORY>"


def close_record(c, vid, fields):
    seq, rec = last_history(c, vid)
    for k, v in fields.items():
        rec = set_field(rec, k, v)
    c.execute("UPDATE history SET body = ?, etime = ? WHERE vid = ? AND seq = ?",
              (rec, fields.get("ETIME", 0), vid, seq))
    return rec


pending = []  # (time due, function): the drivers and the scheduler, run by a thread


def later(fn):
    pending.append((time.monotonic() + 0.2, fn))


def drivers():
    while True:
        time.sleep(0.05)
        with lock:
            due = [p for p in pending if p[0] <= time.monotonic()]
            for p in due:
                pending.remove(p)
                p[1]()


def vm_action(sess, action, vid):
    if sess != session:
        return auth_failed("one.vm.action")
    if args.action_log:
        with open(args.action_log, "a") as f:
            f.write("%s %d\n" % (action, vid))
    with lock:
        c = db()
        row = c.execute("SELECT body, state, lcm_state FROM vm_pool WHERE oid = ?",
                        (vid,)).fetchone()
        if not row:
            return [False, "[one.vm.action] Error getting virtual machine [%d]." % vid, 0x0400]
        body, state, lcm = row
        now = int(time.time())
        not_available = [False, "[one.vm.action] This action is not available for state %s"
                         % {1: "PENDING", 3: "ACTIVE", 4: "STOPPED", 8: "POWEROFF",
                            9: "UNDEPLOYED"}.get(state, str(state)), 0x0800]
        if action in ("undeploy", "undeploy-hard"):
            if not (state == 8 or (state == 3 and lcm in (3, 16))):
                return not_available
            hard = action == "undeploy-hard"
            rec = close_record(c, vid, {"ACTION": 6 if hard else 5, "ESTIME": now}
                               if state == 8 else {"ACTION": 6 if hard else 5})
            body = embed(set_states(body, 3, 30 if state == 8 else 29), rec)
            write_vm(c, vid, body, 3, 30 if state == 8 else 29)

            def finish():
                c2 = db()
                b = c2.execute("SELECT body FROM vm_pool WHERE oid = ?", (vid,)).fetchone()[0]
                t = int(time.time())
                r = close_record(c2, vid, {"ETIME": t, "EETIME": t, "RETIME": t})
                write_vm(c2, vid, embed(set_states(b, 9, 0), r), 9, 0)
            later(finish)
        elif action == "resume":
            if state in (4, 9):
                body = set_states(automatic_requirements(c, body), 1, 0)
                write_vm(c, vid, body, 1, 0)

                def deploy():
                    c2 = db()
                    b = c2.execute("SELECT body FROM vm_pool WHERE oid = ?", (vid,)).fetchone()[0]
                    pick = schedule(c2, vid, b)
                    if not pick:
                        return  # stays PENDING, as with oned when nothing matches
                    cid, hid, ds, tm = pick
                    seq = last_history(c2, vid)[0] + 1
                    rec = new_record(c2, vid, seq, hid, cid, ds, tm, b, int(time.time()))
                    write_vm(c2, vid, embed(set_states(b, 3, 3), rec), 3, 3)
                later(deploy)
            elif state == 8:  # LifeCycleManager::trigger_restart + cp_history
                seq, last = last_history(c, vid)
                close_record(c, vid, {"ETIME": now})

                def g(t):
                    return re.search(r"<%s>(.*?)</%s>" % (t, t), last, re.S).group(1)
                tm = re.sub(r"<!\[CDATA\[(.*)\]\]>", r"\1", g("TM_MAD"))
                rec = new_record(c, vid, seq + 1, int(g("HID")), int(g("CID")), int(g("DS_ID")),
                                 tm, body, now, action=11)
                write_vm(c, vid, embed(set_states(body, 3, 3), rec), 3, 3)
            else:
                return not_available
        else:
            return [False, "[one.vm.action] Action %s not handled by this stand-in" % action,
                    0x0800]
    return [True, vid, 0]


class Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)

    def log_message(self, *a):
        pass


STALE = {}
if args.stale_history:
    for vid, seq, body in db().execute("SELECT vid, seq, body FROM history ORDER BY vid, seq"):
        STALE.setdefault(vid, []).append((seq, body))

server = SimpleXMLRPCServer(("127.0.0.1", 0), requestHandler=Handler, logRequests=False,
                            allow_none=False)
server.register_function(sqlquery, "one.system.sqlquery")
server.register_function(sql_exec, "one.system.sql")
server.register_function(system_config, "one.system.config")
server.register_function(system_version, "one.system.version")
server.register_function(vm_info, "one.vm.info")
server.register_function(object_info("image_pool", "one.image.info", "image"), "one.image.info")
server.register_function(object_info("datastore_pool", "one.datastore.info", "datastore"),
                         "one.datastore.info")
server.register_function(vm_action, "one.vm.action")
threading.Thread(target=drivers, daemon=True).start()
tmp = args.port_file + ".tmp"
with open(tmp, "w") as f:
    f.write("%d\n" % server.server_address[1])
os.rename(tmp, args.port_file)  # the test waits for this file: no fixed sleep
server.serve_forever()
