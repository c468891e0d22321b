# Helpers for tests/test-migrate-*.py: build OpenNebula catalogs from the repo's fixture
# (migrator/opennebula/fixtures/one-6.8.sql) and its schema variants, dump every row, run ferry, and
# apply the expected edits independently (ElementTree) to compare with what ferry wrote.
import atexit
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

FERRY = os.environ["FERRY"]
SRCDIR = os.environ["SRCDIR"]
FIXTURE = os.path.join(SRCDIR, "migrator", "opennebula", "fixtures", "one-6.8.sql")

T = tempfile.mkdtemp(prefix="ferry-test.")
atexit.register(shutil.rmtree, T, True)
LOCK = os.path.join(T, "no-oned.lock")  # never created: oned "stopped"


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(77)


# ---- building catalogs ----

def xml_to_json(elem):
    """The VM as JSON for 6.10's body_json: leaves are strings, repeated elements arrays."""
    children = list(elem)
    if not children:
        return elem.text or ""
    out = {}
    for c in children:
        v = xml_to_json(c)
        if c.tag in out:
            if not isinstance(out[c.tag], list):
                out[c.tag] = [out[c.tag]]
            out[c.tag].append(v)
        else:
            out[c.tag] = v
    return out


def body_json_of(body):
    root = ET.fromstring(body)
    return json.dumps({root.tag: xml_to_json(root)}, separators=(",", ":"))


def make_db(path, variant="6.8"):
    """variant: 5.12, 6.8, 6.10 (body_json), 7.0 (body_json + resched)."""
    if os.path.exists(path):
        os.unlink(path)
    db = sqlite3.connect(path)
    db.executescript(open(FIXTURE).read())
    version = {"5.12": "5.12.0", "6.8": "6.8.0", "6.10": "6.10.0", "7.0": "7.0.0"}[variant]
    db.execute("UPDATE db_versioning SET version = ?", (version,))
    db.execute("UPDATE local_db_versioning SET version = ?", (version,))
    if variant in ("6.10", "7.0"):
        db.execute("ALTER TABLE vm_pool RENAME COLUMN search_token TO body_json")
        for oid, body in db.execute("SELECT oid, body FROM vm_pool").fetchall():
            db.execute("UPDATE vm_pool SET body_json = ? WHERE oid = ?", (body_json_of(body), oid))
    if variant == "7.0":
        db.execute("ALTER TABLE vm_pool ADD COLUMN resched INTEGER DEFAULT 0")
    db.commit()
    db.close()
    return path


def sql(path, statement, args=()):
    db = sqlite3.connect(path)
    rows = db.execute(statement, args).fetchall()
    db.commit()
    db.close()
    return rows


# ---- observing catalogs ----

TABLE_KEYS = {"history": ("vid", "seq"), "cluster_datastore_relation": ("cid", "oid"),
              "cluster_network_relation": ("cid", "oid"), "pool_control": ("tablename",)}


def dump_rows(path):
    """{(table, key): {column: value}} for every row of every table."""
    db = sqlite3.connect(path)
    out = {}
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        cur = db.execute("SELECT * FROM %s" % table)
        cols = [d[0] for d in cur.description]
        keys = TABLE_KEYS.get(table, ("oid",) if "oid" in cols else tuple(cols[:2]))
        for row in cur:
            rec = dict(zip(cols, row))
            out[(table, tuple(rec[k] for k in keys))] = rec
    db.close()
    return out


def checksum(path):
    out = subprocess.run(["sqlite3", path, ".dump"], check=True, capture_output=True).stdout
    return hashlib.sha256(out).hexdigest()


def ferry(*args, rc=0, env=None):
    e = dict(os.environ)
    e.setdefault("FERRY_STATE_DIR", os.path.join(T, "state"))
    if env:
        e.update(env)
    p = subprocess.run([FERRY, "migrate"] + [str(a) for a in args], capture_output=True,
                       text=True, env=e)
    if rc is not None and p.returncode != rc:
        fail("ferry migrate %s: exit %d, expected %d\nstdout: %s\nstderr: %s"
             % (" ".join(map(str, args)), p.returncode, rc, p.stdout, p.stderr))
    return p


def expect_refusal(path, text, *args, rc=1):
    """ferry must fail with `text` on stderr and leave the catalog byte-identical."""
    before = checksum(path) if os.path.exists(path) else None
    p = ferry(*args, rc=None)
    if p.returncode != rc:
        fail("expected exit %d for %s, got %d\nstderr: %s" % (rc, args, p.returncode, p.stderr))
    if text not in p.stderr:
        fail("stderr of %s lacks %r:\n%s" % (args, text, p.stderr))
    if before and checksum(path) != before:
        fail("refused command %s changed the catalog" % (args,))
    print("ok: refused: " + p.stderr.strip().splitlines()[0])


# ---- expected edits, applied independently ----

class Edit:
    def __init__(self, table, key, column, op, path, value=None):
        self.table, self.key, self.column = table, key, column
        self.op, self.path, self.value = op, path, value


def et_path(path, root_tag):
    """/VM/TEMPLATE/DISK[DISK_ID=1]/DATASTORE -> TEMPLATE/DISK[DISK_ID='1']/DATASTORE"""
    steps = path.strip("/").split("/")
    assert steps[0] == root_tag, (path, root_tag)
    out = []
    for s in steps[1:]:
        if "[" in s:
            name, pred = s[:-1].split("[")
            k, v = pred.split("=")
            s = "%s[%s='%s']" % (name, k, v)
        out.append(s)
    return "/".join(out)


def tree_of(text):
    root = ET.fromstring(text)

    def conv(e):
        return (e.tag, (e.text or "") if not list(e) else "", [conv(c) for c in e])
    return conv(root)


def apply_xml(text, edits):
    root = ET.fromstring(text)
    for e in edits:
        p = et_path(e.path, root.tag)
        if e.op == "set":
            nodes = root.findall(p)
            if len(nodes) != 1:
                fail("expected edit %s matches %d nodes" % (e.path, len(nodes)))
            nodes[0].text = e.value
        elif e.op == "delete":
            parent_path, name = p.rsplit("/", 1)
            parent = root.find(parent_path)
            for n in parent.findall(name):
                parent.remove(n)
        elif e.op in ("add", "remove"):
            lst = root.find(et_path(e.path.rsplit("/", 1)[0], root.tag))
            ids = {int(i.text) for i in lst.findall("ID")}
            if e.op == "add":
                ids.add(int(e.value))
            else:
                ids.discard(int(e.value))
            for i in lst.findall("ID"):
                lst.remove(i)
            for i in sorted(ids):
                ET.SubElement(lst, "ID").text = str(i)
    return root


def et_tree(root):
    def conv(e):
        return (e.tag, (e.text or "") if not list(e) else "", [conv(c) for c in e])
    return conv(root)


def json_path_get(doc, path):
    cur = doc
    steps = path.strip("/").split("/")
    for s in steps:
        pred = None
        if "[" in s:
            s, pred = s[:-1].split("[")
            pred = pred.split("=")
        cur = cur[s]
        if isinstance(cur, list):
            cur = [c for c in cur if pred is None or str(c.get(pred[0])) == pred[1]]
            assert len(cur) == 1, path
            cur = cur[0]
    return cur


def check_edits(before, after, edits):
    """Every row/column not named by `edits` is unchanged; every named XML column equals the
    before-image with exactly those edits applied (compared as trees)."""
    by_cell = {}
    for e in edits:
        by_cell.setdefault((e.table, e.key, e.column), []).append(e)
    if set(before) != set(after):
        fail("rows added or removed: %s" % (set(before) ^ set(after)))
    for rk in before:
        for col in before[rk]:
            cell = (rk[0], rk[1], col)
            b, a = before[rk][col], after[rk][col]
            if cell not in by_cell:
                if a != b:
                    fail("unexpected change in %s %s column %s" % (rk[0], rk[1], col))
                continue
            if col == "body_json":
                doc = json.loads(a)
                for e in by_cell[cell]:
                    steps = e.path
                    if e.op == "set":
                        got = json_path_get(doc, steps)
                        if str(got) != e.value:
                            fail("body_json %s = %r, expected %r" % (steps, got, e.value))
                    elif e.op == "delete":
                        parent, name = steps.rsplit("/", 1)
                        if name in json_path_get(doc, parent):
                            fail("body_json %s still present" % steps)
                expected_doc = json.loads(body_json_of(after[rk]["body"]))
                if doc != expected_doc:
                    fail("body_json of %s does not match its body" % (rk,))
                continue
            want = et_tree(apply_xml(b, by_cell[cell]))
            if tree_of(a) != want:
                fail("%s %s %s differs from the expected edits" % (rk[0], rk[1], col))
            for e in by_cell[cell]:
                root = ET.fromstring(a)
                p = et_path(e.path, root.tag)
                if e.op == "set":
                    n = root.findall(p)
                    if len(n) != 1 or n[0].text != e.value:
                        fail("XPath %s in %s %s: %r, expected %r"
                             % (e.path, rk, col, [x.text for x in n], e.value))
                elif e.op == "delete" and root.findall(p):
                    fail("XPath %s still present in %s %s" % (e.path, rk, col))
            print("ok: %s %s %s: %d edit(s) exactly" % (rk[0], rk[1], col, len(by_cell[cell])))
    untouched_changed = [c for c in by_cell if before[(c[0], c[1])][c[2]] ==
                         after[(c[0], c[1])][c[2]]]
    if untouched_changed:
        fail("expected edits not applied: %s" % untouched_changed)


def vm43_to_cluster100_edits(short_body=True, body_json=False):
    """The edits of shared/opennebula/README.md for VM 43 (disks 0, 1) to cluster 100."""
    E = []
    cols = ["body"] + (["short_body"] if short_body else []) + (["body_json"] if body_json else [])
    for col in cols:
        for d in (0, 1):
            base = "/VM/TEMPLATE/DISK[DISK_ID=%d]/" % d
            E.append(Edit("vm_pool", (43,), col, "set", base + "DATASTORE", "images-b"))
            E.append(Edit("vm_pool", (43,), col, "set", base + "DATASTORE_ID", "101"))
            if col != "short_body":  # short_body carries no CLUSTER_ID
                E.append(Edit("vm_pool", (43,), col, "set", base + "CLUSTER_ID", "100"))
        E.append(Edit("vm_pool", (43,), col, "set", "/VM/HISTORY_RECORDS/HISTORY/DS_ID", "100"))
        E.append(Edit("vm_pool", (43,), col, "delete", "/VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS"))
    E.append(Edit("history", (43, 0), "body", "set", "/HISTORY/DS_ID", "100"))
    E.append(Edit("image_pool", (11,), "body", "set", "/IMAGE/DATASTORE_ID", "101"))
    E.append(Edit("image_pool", (11,), "body", "set", "/IMAGE/DATASTORE", "images-b"))
    E.append(Edit("datastore_pool", (1,), "body", "remove", "/DATASTORE/IMAGES/ID", "11"))
    E.append(Edit("datastore_pool", (101,), "body", "add", "/DATASTORE/IMAGES/ID", "11"))
    return E


def edit_set(edits):
    return sorted((e.table, e.key[0], e.column, e.op, e.path, e.value) for e in edits)


def ferry_edit_set(report):
    out = []
    for e in report["edits"]:
        value = e.get("new") if e["op"] in ("set", "add") else (
            e.get("old") if e["op"] == "remove" else None)
        out.append((e["table"], e["id"], e["column"], e["op"], e["path"], value))
    return sorted(out)


# ---- MariaDB: a real server on a unix socket under T, stopped by PID ----

def start_mariadb():
    for prog in ("mariadb-install-db", "mariadbd", "mariadb"):
        if not shutil.which(prog) and not os.path.exists("/usr/sbin/" + prog):
            skip(prog + " not installed")
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    d = os.path.join(T, "mariadb")
    os.mkdir(d)
    user = ["--user=root"] if os.getuid() == 0 else []
    for attempt in range(2):  # seen failing once on a loaded 2-core machine: retry once
        shutil.rmtree(d + "/db", ignore_errors=True)
        p = subprocess.run(["mariadb-install-db", "--no-defaults", "--datadir=" + d + "/db",
                            "--auth-root-authentication-method=normal", "--skip-test-db"] + user,
                           capture_output=True, text=True)
        if p.returncode == 0:
            break
    if p.returncode != 0:
        fail("mariadb-install-db: exit %d\n%s\n%s" % (p.returncode, p.stdout, p.stderr))
    sock = os.path.join(d, "sock")
    proc = subprocess.Popen([mariadbd, "--no-defaults", "--datadir=" + d + "/db",
                             "--socket=" + sock, "--skip-networking", "--pid-file=" + d + "/pid",
                             "--innodb-buffer-pool-size=16M", "--log-error=" + d + "/error.log"]
                            + user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop():
        proc.terminate()
        proc.wait(timeout=60)
    atexit.register(stop)
    for _ in range(600):  # wait for the socket (polling, no fixed sleep)
        if os.path.exists(sock):
            break
        if proc.poll() is not None:
            fail("mariadbd exited: " + open(d + "/error.log").read())
        import time
        time.sleep(0.05)
    else:
        fail("mariadbd did not create its socket")
    return sock


def mariadb(sock, sql_text, db=None):
    args = ["mariadb", "--no-defaults", "-S", sock, "-uroot", "-N", "-B"] + ([db] if db else [])
    p = subprocess.run(args, input=sql_text, capture_output=True, text=True)
    if p.returncode != 0:
        fail("mariadb: " + p.stderr)
    return p.stdout


def load_fixture_mariadb(sock, db):
    """The fixture with MySQL DDL: same tables, InnoDB, FULLTEXT index on search_token."""
    text = open(FIXTURE).read()
    text = text.replace("PRAGMA foreign_keys=OFF;", "").replace("BEGIN TRANSACTION;",
                                                                "START TRANSACTION;")
    mariadb(sock, "SET sql_mode = 'NO_BACKSLASH_ESCAPES'; DROP DATABASE IF EXISTS %s; "
            "CREATE DATABASE %s; USE %s;\n%s\nALTER TABLE vm_pool ADD FULLTEXT ftidx(search_token);"
            % (db, db, db, text))


def dump_rows_mariadb(sock, db):
    out = {}
    tables = mariadb(sock, "SHOW TABLES", db).split()
    for table in tables:
        cols = mariadb(sock, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE "
                       "TABLE_SCHEMA = '%s' AND TABLE_NAME = '%s' ORDER BY ORDINAL_POSITION"
                       % (db, table)).split()
        rows = mariadb(sock, "SELECT %s FROM %s" % (", ".join("HEX(CAST(%s AS CHAR))" % c for c in cols), table),
                       db)
        keys = TABLE_KEYS.get(table, ("oid",) if "oid" in cols else tuple(cols[:2]))
        for line in rows.splitlines():
            vals = [None if v == "NULL" else bytes.fromhex(v).decode() for v in line.split("\t")]
            rec = dict(zip(cols, vals))
            for c in cols:  # integers as integers, like sqlite3 returns them
                if rec[c] is not None and c in ("oid", "vid", "seq", "cid", "uid", "gid",
                                                "state", "lcm_state", "owner_u", "group_u",
                                                "other_u", "stime", "etime", "last_oid",
                                                "timestamp", "is_slave"):
                    rec[c] = int(rec[c])
            out[(table, tuple(rec[k] for k in keys))] = rec
    return out


def checksum_mariadb(sock, db):
    rows = dump_rows_mariadb(sock, db)
    return hashlib.sha256(repr(sorted(rows.items(), key=repr)).encode()).hexdigest()
