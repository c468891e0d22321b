# ferry migrate refuses, with a message naming the problem, and leaves the catalog unchanged:
# unknown VM/disk/datastore/cluster, a datastore outside the target cluster, a VM state that
# cannot move, a network missing from the target cluster, oned running (lock), bad usage,
# storage steps that cannot start, an existing journal.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import LOCK, T, checksum, expect_refusal, fail, ferry, make_db, sql

db = make_db(os.path.join(T, "one.db"))
cat = "sqlite:" + db
base = ["--catalog", cat, "--one-lock", LOCK, "--storage", "none"]

expect_refusal(db, "VM 99 not found in vm_pool", *base, "--vm", 99, "--to-cluster", 100)
expect_refusal(db, "VM 42 has no disk 7 (DISK_ID)", *base, "--vm", 42, "--disk", 7,
               "--to-cluster", 100)
expect_refusal(db, "cluster 7 not found in cluster_pool", *base, "--vm", 42, "--to-cluster", 7)
expect_refusal(db, "datastore 555 not found in datastore_pool", *base, "--vm", 42,
               "--to-datastore", 555, "--to-system-datastore", 100)
expect_refusal(db, "datastore 555 not found in datastore_pool", *base, "--vm", 42,
               "--to-cluster", 100, "--to-datastore", 555)
expect_refusal(db, "datastore 1 (images-a) is not in cluster 100 (cluster-b)", *base, "--vm", 42,
               "--to-cluster", 100, "--to-datastore", 1)
expect_refusal(db, "datastore 0 (system-a) is not in cluster 100 (cluster-b)", *base, "--vm", 42,
               "--to-cluster", 100, "--to-system-datastore", 0)
expect_refusal(db, "datastore 101 and system datastore 0 share no cluster", *base, "--vm", 42,
               "--to-datastore", 101, "--to-system-datastore", 0)
expect_refusal(db, "datastore 101 (images-b) is not a system datastore", *base, "--vm", 42,
               "--to-cluster", 100, "--to-system-datastore", 101)
expect_refusal(db, "datastore 100 (system-b) is not an image datastore", *base, "--vm", 42,
               "--to-cluster", 100, "--to-datastore", 100)

# VM states: RUNNING needs --force; SUSPENDED (and every transient state) never moves.
expect_refusal(db, "VM 43 (db-01) is RUNNING: undeploy it first, or pass --force",
               *base, "--vm", 43, "--to-cluster", 100)
sql(db, "UPDATE vm_pool SET state = 5 WHERE oid = 42")
expect_refusal(db, "VM 42 (web-01) is in state SUSPENDED (LCM state 0): ferry moves VMs that "
               "are UNDEPLOYED or STOPPED", *base, "--vm", 42, "--to-cluster", 100)
expect_refusal(db, "is in state SUSPENDED", *base, "--vm", 42, "--to-cluster", 100, "--force")
sql(db, "UPDATE vm_pool SET state = 3, lcm_state = 22 WHERE oid = 42")
expect_refusal(db, "VM 42 (web-01) is in state ACTIVE (LCM state 22)", *base, "--vm", 42,
               "--to-cluster", 100, "--force")
sql(db, "UPDATE vm_pool SET state = 4, lcm_state = 0 WHERE oid = 42")  # STOPPED moves
p = ferry(*base, "--vm", 42, "--to-cluster", 100, "--dry-run")
if "edit(s) planned" not in p.stdout:
    fail("STOPPED not movable: " + p.stdout)
sql(db, "UPDATE vm_pool SET state = 9 WHERE oid = 42")
print("ok: STOPPED, UNDEPLOYED move (POWEROFF: tests/test-migrate-poweroff.py)")

# A network of the VM missing from the target cluster.
sql(db, "DELETE FROM cluster_network_relation WHERE cid = 100")
expect_refusal(db, "VM 42: network 0 (NIC 0) is not in cluster 100 (cluster-b)", *base, "--vm", 42,
               "--to-cluster", 100)
sql(db, "INSERT INTO cluster_network_relation VALUES (100, 0)")

# The body's embedded history record is not the history table's last.
sql(db, "INSERT INTO history SELECT vid, 2, replace(body, '<SEQ>1</SEQ>', '<SEQ>2</SEQ>'), stime, "
        "etime FROM history WHERE vid = 42 AND seq = 1")
expect_refusal(db, "VM 42: its body embeds history seq 1 but the history table's last is another",
               *base, "--vm", 42, "--to-cluster", 100)
sql(db, "DELETE FROM history WHERE vid = 42 AND seq = 2")

# A cluster with two image datastores needs --to-datastore.
sql(db, "INSERT INTO datastore_pool SELECT 102, 'images-c', replace(replace(body, "
        "'<ID>101</ID>', '<ID>102</ID>'), 'images-b', 'images-c'), uid, gid, owner_u, group_u, "
        "other_u FROM datastore_pool WHERE oid = 101")
sql(db, "INSERT INTO cluster_datastore_relation VALUES (100, 102)")
expect_refusal(db, "cluster 100 (cluster-b) has 2 image datastores: name one with --to-datastore",
               *base, "--vm", 42, "--to-cluster", 100)
p = ferry(*base, "--vm", 42, "--to-cluster", 100, "--to-datastore", 102, "--dry-run")
if "datastore 102 (images-c)" not in p.stdout:
    fail("explicit --to-datastore not used: " + p.stdout)
db = make_db(db)

# oned running: its lock file exists ("held" = exists, whatever it contains).
lock = os.path.join(T, "one.lock")
open(lock, "w").close()
expect_refusal(db, "oned lock %s exists: oned seems to be running" % lock, "--catalog", cat,
               "--one-lock", lock, "--storage", "none", "--vm", 42, "--to-cluster", 100)
expect_refusal(db, "oned lock %s exists" % lock, "--rollback", os.path.join(T, "x.json"),
               "--catalog", cat, "--one-lock", lock)
p = ferry("--catalog", cat, "--one-lock", lock, "--storage", "none", "--vm", 42, "--to-cluster",
          100, "--dry-run")  # reading is fine
print("ok: dry-run reads with oned's lock present")

# Catalog URIs and files.
expect_refusal(db, "cannot open", "--catalog", "sqlite:" + os.path.join(T, "missing.db"),
               "--one-lock", LOCK, "--storage", "none", "--vm", 42, "--to-cluster", 100)
if os.path.exists(os.path.join(T, "missing.db")):
    fail("a missing catalog was created")
expect_refusal(db, "unknown catalog URI", "--catalog", "postgres://x/y", "--one-lock", LOCK,
               "--storage", "none", "--vm", 42, "--to-cluster", 100)
expect_refusal(db, "expected mysql://user[:pass]@host[:port]/db", "--catalog", "mysql://nohost",
               "--one-lock", LOCK, "--storage", "none", "--vm", 42, "--to-cluster", 100)

# Storage steps that cannot start (tests/test-migrate-storage-*.sh cover the working ones):
# no datastore directory for fs, a hook that names no destination path for exec.
for storage, message in (
        ("fs", "datastore 0: source volume %s/0/42/disk.0: No such file or directory" % T),
        ("exec:/bin/true", "disk 0: the storage hook did not name the destination volume's path")):
    expect_refusal(db, message, "--catalog", cat, "--one-lock", LOCK, "--storage", storage,
                   "--datastores", T, "--vm", 42, "--to-cluster", 100)

# Usage errors: exit 2.
expect_refusal(db, "--storage tape: expected fs, exec:CMD or none", *base[:-2], "--storage",
               "tape", "--vm", 42, "--to-cluster", 100, rc=2)
expect_refusal(db, "missing --vm ID", *base, "--to-cluster", 100, rc=2)
expect_refusal(db, "missing --catalog URI", "--storage", "none", "--vm", 42, "--to-cluster", 100,
               rc=2)
expect_refusal(db, "name the destination", *base, "--vm", 42, "--to-datastore", 101, rc=2)
expect_refusal(db, "--vm", *base, "--vm", "forty-two", "--to-cluster", 100, rc=2)
expect_refusal(db, "unexpected argument 'extra'", *base, "--vm", 42, "--to-cluster", 100, "extra",
               rc=2)

# An existing journal is never overwritten (it may hold another move's images).
journal = os.path.join(T, "taken.json")
open(journal, "w").write("{}\n")
expect_refusal(db, "journal %s: File exists" % journal, *base, "--vm", 42, "--to-cluster", 100,
               "--journal", journal)
expect_refusal(db, "journal %s" % os.path.join(T, "none.json"), "--rollback",
               os.path.join(T, "none.json"), "--catalog", cat, "--one-lock", LOCK)

p = ferry("--help")
if "--rollback JOURNAL" not in p.stdout:
    fail("--help")
print("ok: --help")
