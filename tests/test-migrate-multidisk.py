# A VM with three disks where only one moves (built from the fixture: VM 42 gains persistent
# images 12 and 13 as DISK 1 and DISK 2): only DISK[DISK_ID=1] changes, the last history row
# (seq 1, not seq 0) and the embedded record follow, the other disks stay byte-identical.
# Then the base-image rule: image 10 stays while a VM on its datastore uses it, and moves with
# the last one.
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (CEPH_B, LOCK, T, Edit, check_edits, checksum, dump_rows, edit_set, fail,
                         ferry, ferry_edit_set, make_db, sql)

db = make_db(os.path.join(T, "one.db"))

# ---- build the three-disk VM ----
(body, short) = sql(db, "SELECT body, short_body FROM vm_pool WHERE oid = 42")[0]
disk0 = re.search(r"<DISK>.*?</DISK>", body).group(0)
sdisk0 = re.search(r"<DISK>.*?</DISK>", short).group(0)


def disk_variant(d, disk_id, image_id, name, target):
    d = d.replace("<DISK_ID><![CDATA[0]]>", "<DISK_ID><![CDATA[%d]]>" % disk_id)
    d = d.replace("<IMAGE_ID><![CDATA[10]]>", "<IMAGE_ID><![CDATA[%d]]>" % image_id)
    d = d.replace("ubuntu-22.04-base", name).replace("one-a/one-10", "one-a/one-%d" % image_id)
    d = d.replace("<CLONE><![CDATA[YES]]>", "<CLONE><![CDATA[NO]]>")
    return d.replace("<TARGET><![CDATA[vda]]>", "<TARGET><![CDATA[%s]]>" % target)


body = body.replace(disk0, disk0 + disk_variant(disk0, 1, 12, "logs", "vdb") +
                    disk_variant(disk0, 2, 13, "scratch", "vdc"))
short = short.replace(sdisk0, sdisk0 + disk_variant(sdisk0, 1, 12, "logs", "vdb") +
                      disk_variant(sdisk0, 2, 13, "scratch", "vdc"))
sql(db, "UPDATE vm_pool SET body = ?, short_body = ? WHERE oid = 42", (body, short))
for img, name in ((12, "logs"), (13, "scratch")):
    sql(db, "INSERT INTO image_pool SELECT ?, ?, replace(replace(replace(replace(body, "
            "'<ID>11</ID><UID>', '<ID>%d</ID><UID>'), 'db-data', ?), 'one-a/one-11', "
            "'one-a/one-%d'), '<VMS><ID>43</ID>', '<VMS><ID>42</ID>'), uid, gid, owner_u, "
            "group_u, other_u FROM image_pool WHERE oid = 11" % (img, img), (img, name, name))
sql(db, "UPDATE datastore_pool SET body = replace(body, '<IMAGES><ID>10</ID><ID>11</ID></IMAGES>',"
        " '<IMAGES><ID>10</ID><ID>11</ID><ID>12</ID><ID>13</ID></IMAGES>') WHERE oid = 1")

before, before_sum = dump_rows(db), checksum(db)
journal = os.path.join(T, "disk1.json")
p = ferry("--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 42,
          "--disk", 1, "--to-cluster", 100, "--json", "--journal", journal)

E = []
for col in ("body", "short_body"):
    base = "/VM/TEMPLATE/DISK[DISK_ID=1]/"
    E.append(Edit("vm_pool", (42,), col, "set", base + "DATASTORE", "images-b"))
    E.append(Edit("vm_pool", (42,), col, "set", base + "DATASTORE_ID", "101"))
    if col == "body":
        E.append(Edit("vm_pool", (42,), col, "set", base + "CLUSTER_ID", "100"))
        for k, v in CEPH_B.items():  # inherited from datastore 101 (Datastore::disk_attribute)
            E.append(Edit("vm_pool", (42,), col, "set", base + k, v))
        E.append(Edit("vm_pool", (42,), col, "set", base + "SOURCE", "one-b/one-12"))
    E.append(Edit("vm_pool", (42,), col, "set", "/VM/HISTORY_RECORDS/HISTORY/DS_ID", "100"))
    E.append(Edit("vm_pool", (42,), col, "delete", "/VM/USER_TEMPLATE/SCHED_DS_REQUIREMENTS"))
    E.append(Edit("vm_pool", (42,), col, "delete", "/VM/USER_TEMPLATE/SCHED_REQUIREMENTS"))
E.append(Edit("history", (42, 1), "body", "set", "/HISTORY/DS_ID", "100"))
E.append(Edit("image_pool", (12,), "body", "set", "/IMAGE/DATASTORE_ID", "101"))
E.append(Edit("image_pool", (12,), "body", "set", "/IMAGE/DATASTORE", "images-b"))
E.append(Edit("image_pool", (12,), "body", "set", "/IMAGE/SOURCE", "one-b/one-12"))
E.append(Edit("datastore_pool", (1,), "body", "remove", "/DATASTORE/IMAGES/ID", "12"))
E.append(Edit("datastore_pool", (101,), "body", "add", "/DATASTORE/IMAGES/ID", "12"))
if ferry_edit_set(json.loads(p.stdout)) != edit_set(E):
    fail("reported edits differ: %s" % ferry_edit_set(json.loads(p.stdout)))
after = dump_rows(db)
check_edits(before, after, E)
for d in (0, 2):  # the disks that stay: byte-identical text
    pat = r"<DISK>(?:(?!</DISK>).)*<DISK_ID><!\[CDATA\[%d\]\]></DISK_ID>.*?</DISK>" % d
    if re.search(pat, before[("vm_pool", (42,))]["body"]).group(0) != \
            re.search(pat, after[("vm_pool", (42,))]["body"]).group(0):
        fail("DISK %d changed" % d)
print("ok: only DISK 1 of 3 moved; DISK 0 and 2 byte-identical; history seq 1 edited, seq 0 not")
ferry("--rollback", journal, "--one-lock", LOCK)
if checksum(db) != before_sum:
    fail("rollback not byte-exact")
print("ok: rollback byte-exact")

# ---- base image 10: stays while VM 43 (on datastore 1) uses it, moves with the last user ----
p = ferry("--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 42,
          "--to-cluster", 100, "--json", "--journal", os.path.join(T, "vm42.json"))
r = json.loads(p.stdout)
if "image 10 (non-persistent) stays on datastore 1: still used there by VM 43" not in r["notes"]:
    fail("image 10 should stay: %s" % r["notes"])
if any(e["table"] == "image_pool" and e["id"] == 10 for e in r["edits"]):
    fail("image 10 moved although VM 43 uses it")
p = ferry("--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 43,
          "--to-cluster", 100, "--force", "--json", "--journal", os.path.join(T, "vm43.json"))
r = json.loads(p.stdout)
moved = sorted((e["path"], e["new"]) for e in r["edits"]
               if e["table"] == "image_pool" and e["id"] == 10)
if moved != [("/IMAGE/DATASTORE", "images-b"), ("/IMAGE/DATASTORE_ID", "101"),
             ("/IMAGE/SOURCE", "one-b/one-10")]:
    fail("image 10 did not move with its last user: %s" % moved)
ids = re.findall(r"<IMAGES>(.*?)</IMAGES>",
                 sql(db, "SELECT body FROM datastore_pool WHERE oid = 101")[0][0])[0]
if ids != "<ID>10</ID><ID>11</ID><ID>12</ID><ID>13</ID>":
    fail("datastore 101 IMAGES: " + ids)
ids = re.findall(r"<IMAGES>(.*?)</IMAGES>",
                 sql(db, "SELECT body FROM datastore_pool WHERE oid = 1")[0][0])[0]
if ids != "":
    fail("datastore 1 IMAGES: " + ids)
print("ok: image 10 stays for VM 43, then moves with it; IMAGES lists sorted, emptied as "
      "<IMAGES></IMAGES>")
ferry("--rollback", os.path.join(T, "vm43.json"), "--one-lock", LOCK)
ferry("--rollback", os.path.join(T, "vm42.json"), "--one-lock", LOCK)
if checksum(db) != before_sum:
    fail("two rollbacks (newest first) not byte-exact")
print("ok: two rollbacks restore the catalog byte-exactly")
