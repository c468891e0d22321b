# Helpers for tests/test-migrate-*.py: build OpenNebula catalogs from the repo's fixture
# (migrator/opennebula/fixtures/one-6.8.sql) and its schema variants, dump every row, run ferry, and
# apply the expected edits independently (ElementTree) to compare with what ferry wrote.
import atexit
import hashlib
import json
import os
import re
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

from one_json import body_json_of, escape_json  # noqa: E402 (oned's body_json text)


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


# ---- catalog variants (issue 11): a shared cluster, a volatile disk, owners with quotas ----

def cd(v):
    return "<![CDATA[%s]]>" % v


def ds_body(oid, name, ds_type, tm_mad, ds_mad, disk_type, cluster, template):
    """Datastore::to_xml, in the fixture's layout; `template` in name order."""
    perms = ("<PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A><GROUP_U>1"
             "</GROUP_U><GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U><OTHER_M>0"
             "</OTHER_M><OTHER_A>0</OTHER_A></PERMISSIONS>")
    tmpl = "".join("<%s>%s</%s>" % (k, cd(v), k) for k, v in sorted(template.items()))
    return ("<DATASTORE><ID>%d</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin"
            "</GNAME><NAME>%s</NAME>%s<DS_MAD>%s</DS_MAD><TM_MAD>%s</TM_MAD><BASE_PATH>%s"
            "</BASE_PATH><TYPE>%d</TYPE><DISK_TYPE>%d</DISK_TYPE><STATE>0</STATE><CLUSTERS><ID>%d"
            "</ID></CLUSTERS><TOTAL_MB>1048576</TOTAL_MB><FREE_MB>1048576</FREE_MB><USED_MB>0"
            "</USED_MB><IMAGES></IMAGES><TEMPLATE>%s</TEMPLATE></DATASTORE>"
            % (oid, name, perms, cd(ds_mad), cd(tm_mad),
               cd("/var/lib/one//datastores/%d" % oid), ds_type, disk_type, cluster, tmpl))


def add_shared_cluster(path):
    """Cluster 200 'cluster-c': system datastore 200 and image datastore 201 on shared storage
    (TM_MAD shared, DISK_TYPE FILE), host 3, network 0 — the other side of a ceph-to-shared move."""
    db = sqlite3.connect(path)
    db.execute("INSERT INTO cluster_pool (oid, name, body, uid, gid, owner_u, group_u, other_u) "
               "VALUES (200, 'cluster-c', ?, 0, 0, 1, 0, 0)",
               ("<CLUSTER><ID>200</ID><NAME>cluster-c</NAME><HOSTS><ID>3</ID></HOSTS><DATASTORES>"
                "<ID>200</ID><ID>201</ID></DATASTORES><VNETS><ID>0</ID></VNETS><TEMPLATE>"
                "<RESERVED_CPU><![CDATA[]]></RESERVED_CPU><RESERVED_MEM><![CDATA[]]>"
                "</RESERVED_MEM></TEMPLATE></CLUSTER>",))
    db.execute("INSERT INTO datastore_pool VALUES (200, 'system-c', ?, 0, 0, 1, 1, 0)",
               (ds_body(200, "system-c", 1, "shared", "-", 0, 200,
                        {"SHARED": "YES", "TM_MAD": "shared", "TYPE": "SYSTEM_DS",
                         "COMPATIBLE_SYS_DS": "200"}),))
    db.execute("INSERT INTO datastore_pool VALUES (201, 'images-c', ?, 0, 0, 1, 1, 0)",
               (ds_body(201, "images-c", 0, "shared", "fs", 0, 200,
                        {"ALLOW_ORPHANS": "NO", "CLONE_TARGET": "SYSTEM",
                         "CLONE_TARGET_SSH": "SYSTEM", "COMPATIBLE_SYS_DS": "200",
                         "DISK_TYPE_SSH": "FILE", "DS_MAD": "fs", "LN_TARGET": "NONE",
                         "LN_TARGET_SSH": "SYSTEM", "SHARED": "YES", "TM_MAD": "shared",
                         "TM_MAD_SYSTEM": "ssh,shared", "TYPE": "IMAGE_DS"}),))
    for cid, oid in ((200, 200), (200, 201)):
        db.execute("INSERT INTO cluster_datastore_relation VALUES (?, ?)", (cid, oid))
    db.execute("INSERT INTO cluster_network_relation VALUES (200, 0)")
    db.commit()
    db.close()
    refresh_json(path)


SHARED_C = {"DATASTORE": "images-c", "DATASTORE_ID": "201", "CLUSTER_ID": "200",
            "TM_MAD": "shared", "CLONE_TARGET": "SYSTEM", "LN_TARGET": "NONE",
            "ALLOW_ORPHANS": "NO", "TYPE": "FILE"}
CEPH_ONLY = ("CEPH_HOST", "CEPH_SECRET", "CEPH_USER", "POOL_NAME", "DISK_TYPE")

VOLATILE_42 = ("<DISK><ALLOW_ORPHANS><![CDATA[mixed]]></ALLOW_ORPHANS><CEPH_HOST><![CDATA["
               "ceph-a-mon1 ceph-a-mon2 ceph-a-mon3]]></CEPH_HOST><CEPH_SECRET><![CDATA["
               "6b4f0f7e-1111-4c2a-9d0a-aaaaaaaaaaaa]]></CEPH_SECRET><CEPH_USER><![CDATA["
               "oneadmin]]></CEPH_USER><CLUSTER_ID><![CDATA[0]]></CLUSTER_ID><DATASTORE><![CDATA["
               "system-a]]></DATASTORE><DATASTORE_ID><![CDATA[0]]></DATASTORE_ID><DEV_PREFIX>"
               "<![CDATA[vd]]></DEV_PREFIX><DISK_ID><![CDATA[2]]></DISK_ID><DISK_TYPE><![CDATA["
               "RBD]]></DISK_TYPE><DRIVER><![CDATA[raw]]></DRIVER><FORMAT><![CDATA[raw]]></FORMAT>"
               "<POOL_NAME><![CDATA[one-a]]></POOL_NAME><SIZE><![CDATA[1024]]></SIZE><TARGET>"
               "<![CDATA[vdb]]></TARGET><TM_MAD><![CDATA[ceph]]></TM_MAD><TYPE><![CDATA[fs]]>"
               "</TYPE></DISK>")
SWAP_NEW_42 = ("<DISK><DEV_PREFIX><![CDATA[vd]]></DEV_PREFIX><DISK_ID><![CDATA[3]]></DISK_ID>"
               "<SIZE><![CDATA[512]]></SIZE><TARGET><![CDATA[vdc]]></TARGET><TYPE><![CDATA[swap]]>"
               "</TYPE></DISK>")


def short_disk(disk):
    """VirtualMachineDisk::to_xml_short of a DISK given as body XML."""
    e = ET.fromstring(disk)
    return "<DISK>" + "".join(cd_elem(t, e.findtext(t) or "") for t in (
        "DISK_ID", "DATASTORE", "DATASTORE_ID", "IMAGE", "IMAGE_ID", "SIZE", "TYPE", "CLONE",
        "CLONE_TARGET", "LN_TARGET", "DISK_SNAPSHOT_TOTAL_SIZE")) + "</DISK>"


def cd_elem(tag, v):
    return "<%s>%s</%s>" % (tag, cd(v), tag)


def add_volatile_disks(path, vm=42):
    """VM 42 gains DISK 2, a deployed volatile FS disk (VirtualMachineDisks::volatile_info gave
    it system datastore 0's DATASTORE/TM_MAD/inherited Ceph values), and DISK 3, a volatile swap
    disk never deployed (no DATASTORE_ID)."""
    (body, short) = sql(path, "SELECT body, short_body FROM vm_pool WHERE oid = ?", (vm,))[0]
    last = body.rindex("</DISK>") + len("</DISK>")
    body = body[:last] + VOLATILE_42 + SWAP_NEW_42 + body[last:]
    slast = short.rindex("</DISK>") + len("</DISK>")
    short = short[:slast] + short_disk(VOLATILE_42) + short_disk(SWAP_NEW_42) + short[slast:]
    sql(path, "UPDATE vm_pool SET body = ?, short_body = ? WHERE oid = ?", (body, short, vm))
    refresh_json(path)


def set_state(path, vm, state, lcm):
    (body, short) = sql(path, "SELECT body, short_body FROM vm_pool WHERE oid = ?", (vm,))[0]
    for tag, v in (("STATE", state), ("LCM_STATE", lcm)):
        body = re.sub(r"<%s>\d+</%s>" % (tag, tag), "<%s>%d</%s>" % (tag, v, tag), body, count=1)
        short = re.sub(r"<%s>\d+</%s>" % (tag, tag), "<%s>%d</%s>" % (tag, v, tag), short, 1)
    sql(path, "UPDATE vm_pool SET body = ?, short_body = ?, state = ?, lcm_state = ? WHERE oid = ?",
        (body, short, state, lcm, vm))
    refresh_json(path)


def quota_body(oid, ds_entries, sys_used=0):
    """QuotasSQL body: <QUOTAS><ID>..</ID> DATASTORE_QUOTA NETWORK_QUOTA VM_QUOTA IMAGE_QUOTA,
    entries as VectorAttribute::to_xml (keys sorted, values CDATA)."""
    def entry(name, d):
        return "<%s>%s</%s>" % (name, "".join(cd_elem(k, d[k]) for k in sorted(d)), name)
    ds = "".join(entry("DATASTORE", {"ID": str(i), "IMAGES": "-1", "IMAGES_USED": str(n),
                                     "SIZE": str(lim), "SIZE_USED": str(sz)})
                 for i, n, sz, lim in ds_entries)
    vm = entry("VM", {"CPU": "-1", "CPU_USED": "1", "MEMORY": "-1", "MEMORY_USED": "2048",
                      "SYSTEM_DISK_SIZE": "-1", "SYSTEM_DISK_SIZE_USED": str(sys_used),
                      "VMS": "-1", "VMS_USED": "1"})
    return ("<QUOTAS><ID>%d</ID><DATASTORE_QUOTA>%s</DATASTORE_QUOTA><NETWORK_QUOTA>"
            "</NETWORK_QUOTA><VM_QUOTA>%s</VM_QUOTA><IMAGE_QUOTA></IMAGE_QUOTA></QUOTAS>"
            % (oid, ds, vm))


def add_quotas(path, size_limit_101=None):
    """VM 43 and images 10, 11 belong to user 2 (alice) in group 100 (dev), whose quota rows
    count them as oned does: datastore 1 holds 2 images, SIZE_USED = 10240 + 51200 (the images)
    + 10240 (VM 43's DISK 0, CLONE_TARGET=SELF); VM 42 belongs to oneadmin (no quotas)."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS user_quotas (user_oid INTEGER PRIMARY KEY, "
               "body MEDIUMTEXT)")
    db.execute("CREATE TABLE IF NOT EXISTS group_quotas (group_oid INTEGER PRIMARY KEY, "
               "body MEDIUMTEXT)")
    entries = [(1, 2, 71680, -1)]
    if size_limit_101 is not None:
        entries.append((101, 0, 0, size_limit_101))
    db.execute("INSERT INTO user_quotas VALUES (2, ?)", (quota_body(2, entries),))
    db.execute("INSERT INTO group_quotas VALUES (100, ?)", (quota_body(100, entries),))
    db.execute("INSERT INTO user_quotas VALUES (0, '<QUOTAS><ID>0</ID><DATASTORE_QUOTA>"
               "</DATASTORE_QUOTA><NETWORK_QUOTA></NETWORK_QUOTA><VM_QUOTA></VM_QUOTA>"
               "<IMAGE_QUOTA></IMAGE_QUOTA></QUOTAS>')")
    own = {"<UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME>":
           "<UID>2</UID><GID>100</GID><UNAME>alice</UNAME><GNAME>dev</GNAME>"}
    for table, oid in (("vm_pool", 43), ("image_pool", 10), ("image_pool", 11)):
        cols = "body, short_body" if table == "vm_pool" else "body"
        vals = db.execute("SELECT %s FROM %s WHERE oid = ?" % (cols, table), (oid,)).fetchone()
        new = [v.replace(*list(own.items())[0], 1) for v in vals]
        db.execute("UPDATE %s SET %s, uid = 2, gid = 100 WHERE oid = ?"
                   % (table, ", ".join("%s = ?" % c for c in cols.split(", "))), new + [oid])
    db.commit()
    db.close()
    refresh_json(path)


def refresh_json(path):
    """6.10+: oned rewrites body_json from the body on every update."""
    db = sqlite3.connect(path)
    if any(r[1] == "body_json" for r in db.execute("PRAGMA table_info(vm_pool)")):
        for oid, body in db.execute("SELECT oid, body FROM vm_pool").fetchall():
            db.execute("UPDATE vm_pool SET body_json = ? WHERE oid = ?", (body_json_of(body), oid))
    db.commit()
    db.close()


def make_catalog(path, variant="6.8", quotas=True):
    """The fixture of `variant` plus cluster 200 (shared), VM 42's volatile disks, and quotas."""
    make_db(path, variant)
    add_shared_cluster(path)
    add_volatile_disks(path)
    if quotas:
        add_quotas(path)
    return path


def disk_of(body, disk_id):
    """{name: value} of DISK[DISK_ID=disk_id] in a VM body."""
    root = ET.fromstring(body)
    for d in root.findall("TEMPLATE/DISK"):
        if d.findtext("DISK_ID") == str(disk_id):
            return {c.tag: c.text or "" for c in d}
    fail("no DISK %s" % disk_id)


def ds_template(path_or_rows, oid):
    body = (sql(path_or_rows, "SELECT body FROM datastore_pool WHERE oid = ?", (oid,))[0][0]
            if isinstance(path_or_rows, str) else path_or_rows)
    return {c.tag: c.text or "" for c in ET.fromstring(body).find("TEMPLATE")}


INHERIT_6_8 = ["CEPH_HOST", "CEPH_SECRET", "CEPH_KEY", "CEPH_USER", "CEPH_CONF", "CEPH_TRASH",
               "POOL_NAME", "ISCSI_USER", "ISCSI_USAGE", "ISCSI_HOST", "GLUSTER_HOST",
               "GLUSTER_VOLUME", "DISK_TYPE", "ALLOW_ORPHANS", "QCOW2_STANDALONE",
               "VCENTER_ADAPTER_TYPE", "VCENTER_DISK_TYPE", "VCENTER_DS_REF",
               "VCENTER_DS_IMAGE_DIR", "VCENTER_DS_VOLATILE_DIR", "VCENTER_INSTANCE_ID"]


def check_inherited(disk, tmpl, what):
    """Every INHERIT_DATASTORE_ATTR the datastore has is the DISK's value; those it lacks the
    DISK lacks too (Datastore::disk_attribute for that datastore)."""
    for a in INHERIT_6_8:
        if a in tmpl and disk.get(a) != tmpl[a]:
            fail("%s: %s is %r, the datastore's is %r" % (what, a, disk.get(a), tmpl[a]))
        if a not in tmpl and a in disk:
            fail("%s: %s=%r left although the datastore has none" % (what, a, disk[a]))
    for a in ("CLONE_TARGET", "LN_TARGET", "TM_MAD"):
        if a in tmpl and disk.get(a) != tmpl[a]:
            fail("%s: %s is %r, the datastore's is %r" % (what, a, disk.get(a), tmpl[a]))


def sql(path, statement, args=()):
    db = sqlite3.connect(path)
    rows = db.execute(statement, args).fetchall()
    db.commit()
    db.close()
    return rows


# ---- observing catalogs ----

TABLE_KEYS = {"history": ("vid", "seq"), "cluster_datastore_relation": ("cid", "oid"),
              "cluster_network_relation": ("cid", "oid"), "pool_control": ("tablename",),
              "user_quotas": ("user_oid",), "group_quotas": ("group_oid",)}


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
    # sqlite:/mysql: catalogs probe oned's XML-RPC endpoint like onedb: nothing listens on port 1.
    e.setdefault("ONE_XMLRPC", "http://127.0.0.1:1/RPC2")
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
    print("ok: refused: " + p.stderr.strip().splitlines()[-1])


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
        elif e.op == "insert":
            parent_path, name = p.rsplit("/", 1)
            parent = root.find(parent_path)
            if "[" in name:  # a quota entry: DATASTORE[ID='101'] with "K=V K=V" values
                tag, pred = name[:-1].split("[")
                k, v = pred.split("=")
                new = ET.Element(tag)
                ET.SubElement(new, k).text = v.strip("'")
                for kv in e.value.split():
                    kk, vv = kv.split("=")
                    ET.SubElement(new, kk).text = vv
                parent.append(new)
                continue
            new = ET.Element(name)
            new.text = e.value
            at = len(parent)
            for i, c in enumerate(parent):
                if c.tag > name:
                    at = i
                    break
            parent.insert(at, new)
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
                    if e.op in ("set", "insert"):
                        got = json_path_get(doc, steps)
                        if str(got) != e.value:
                            fail("body_json %s = %r, expected %r" % (steps, got, e.value))
                    elif e.op == "delete":
                        parent, name = steps.rsplit("/", 1)
                        if name in json_path_get(doc, parent):
                            fail("body_json %s still present" % steps)
                # Byte for byte what oned would write for the edited body: ferry edits the JSON
                # text in place, so its layout (oned's) is kept.
                if a != body_json_of(after[rk]["body"]):
                    fail("body_json of %s is not oned's text for its body:\n%s\n%s"
                         % (rk, a, body_json_of(after[rk]["body"])))
                continue
            want = et_tree(apply_xml(b, by_cell[cell]))
            if tree_of(a) != want:
                fail("%s %s %s differs from the expected edits" % (rk[0], rk[1], col))
            for e in by_cell[cell]:
                root = ET.fromstring(a)
                p = et_path(e.path, root.tag)
                if e.op == "set" or (e.op == "insert" and "[" not in p.rsplit("/", 1)[-1]):
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


CEPH_B = {"CEPH_HOST": "ceph-b-mon1 ceph-b-mon2 ceph-b-mon3",
          "CEPH_SECRET": "9c1e2d3f-2222-4b7c-8e1f-bbbbbbbbbbbb", "POOL_NAME": "one-b"}


def vm43_to_cluster100_edits(short_body=True, body_json=False):
    """The edits of shared/opennebula/README.md for VM 43 (disks 0, 1) to cluster 100, with each
    DISK filled the way Datastore::disk_attribute fills it from datastore 101 (the inherited
    Ceph values of cluster B; CEPH_USER, ALLOW_ORPHANS, DISK_TYPE, CLONE_TARGET, LN_TARGET and
    TM_MAD are the same on both) and the Ceph SOURCE following POOL_NAME."""
    E = []
    cols = ["body"] + (["short_body"] if short_body else []) + (["body_json"] if body_json else [])
    for col in cols:
        for d in (0, 1):
            base = "/VM/TEMPLATE/DISK[DISK_ID=%d]/" % d
            E.append(Edit("vm_pool", (43,), col, "set", base + "DATASTORE", "images-b"))
            E.append(Edit("vm_pool", (43,), col, "set", base + "DATASTORE_ID", "101"))
            if col != "short_body":  # short_body carries no CLUSTER_ID, no inherited values
                E.append(Edit("vm_pool", (43,), col, "set", base + "CLUSTER_ID", "100"))
                for k, v in CEPH_B.items():
                    E.append(Edit("vm_pool", (43,), col, "set", base + k, v))
                E.append(Edit("vm_pool", (43,), col, "set", base + "SOURCE",
                              "one-b/one-%d" % (10 + d)))
        E.append(Edit("vm_pool", (43,), col, "set", "/VM/HISTORY_RECORDS/HISTORY/DS_ID", "100"))
        E.append(Edit("vm_pool", (43,), col, "delete", "/VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS"))
    E.append(Edit("history", (43, 0), "body", "set", "/HISTORY/DS_ID", "100"))
    E.append(Edit("image_pool", (11,), "body", "set", "/IMAGE/DATASTORE_ID", "101"))
    E.append(Edit("image_pool", (11,), "body", "set", "/IMAGE/DATASTORE", "images-b"))
    E.append(Edit("image_pool", (11,), "body", "set", "/IMAGE/SOURCE", "one-b/one-11"))
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
                                                "timestamp", "is_slave", "user_oid",
                                                "group_oid", "resched"):
                    rec[c] = int(rec[c])
            out[(table, tuple(rec[k] for k in keys))] = rec
    return out


def checksum_mariadb(sock, db):
    rows = dump_rows_mariadb(sock, db)
    return hashlib.sha256(repr(sorted(rows.items(), key=repr)).encode()).hexdigest()


def load_sqlite_into_mariadb(sock, db, path):
    """A catalog built in SQLite (the variants above) into MariaDB: the same DDL (oned's, as the
    fixture's), InnoDB, every value as a hex literal so nothing is escaped on the way."""
    src = sqlite3.connect(path)
    stmts = ["SET sql_mode = 'NO_BACKSLASH_ESCAPES'", "DROP DATABASE IF EXISTS %s" % db,
             "CREATE DATABASE %s" % db, "USE %s" % db]
    for (ddl,) in src.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND "
                              "type IN ('table', 'index') ORDER BY type DESC, rowid"):
        stmts.append(ddl.replace("INTEGER DEFAULT 0", "INTEGER"))
    for (table,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        cur = src.execute("SELECT * FROM %s" % table)
        cols = [d[0] for d in cur.description]
        for row in cur:
            vals = ["NULL" if v is None else str(v) if isinstance(v, int) else
                    "CONVERT(X'%s' USING utf8mb4)" % v.encode().hex() for v in row]
            stmts.append("INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(cols),
                                                              ", ".join(vals)))
    src.close()
    mariadb(sock, ";\n".join(stmts) + ";\n")
