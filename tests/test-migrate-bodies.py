# Issue 11 point 11: bodies as oned really writes them.
# - A body that is not XML is refused with the object named: "image_pool oid 11 body: not
#   well-formed XML" (and for a datastore, a VM, a history record).
# - A CRLF inside a CDATA value (a START_SCRIPT pasted from Windows) is kept byte for byte: XML
#   parsers turn CR LF into LF, ferry puts them back; sqlite here and through XML-RPC (MariaDB in
#   test-migrate-mariadb.py), 6.8 and 7.0 (body_json's "\r\n" escapes too).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_migrate import (LOCK, T, body_json_of, checksum, expect_refusal, fail, ferry,
                         make_catalog, refresh_json, sql)
from test_xmlrpc_helpers import start_responder

db = make_catalog(os.path.join(T, "bad.db"))
move = ["--catalog", "sqlite:" + db, "--one-lock", LOCK, "--storage", "none", "--vm", 43,
        "--to-cluster", 100, "--force"]
for table, key, oid, what in (("image_pool", "oid", 11, "image_pool oid 11 body"),
                              ("datastore_pool", "oid", 101, "datastore_pool oid 101 body"),
                              ("history", "vid", 43, "history vid 43 seq 0 body"),
                              ("vm_pool", "oid", 43, "vm_pool oid 43 body")):
    (good,) = sql(db, "SELECT body FROM %s WHERE %s = ?" % (table, key), (oid,))[0]
    sql(db, "UPDATE %s SET body = ? WHERE %s = ?" % (table, key), (good[:-7], oid))
    expect_refusal(db, what + ": not well-formed XML", *move)
    sql(db, "UPDATE %s SET body = ? WHERE %s = ?" % (table, key), (good, oid))

SCRIPT = "<START_SCRIPT><![CDATA[@echo off\r\necho hello\r\nexit /b 0\r\n]]></START_SCRIPT>"
for variant in ("6.8", "7.0"):
    for via in ("sqlite", "xmlrpc"):
        db = make_catalog(os.path.join(T, "crlf-%s-%s.db" % (variant, via)), variant)
        for vm in (42, 43):  # CONTEXT values are in name order: START_SCRIPT after SSH_PUBLIC_KEY
            sql(db, "UPDATE vm_pool SET body = replace(body, '<TARGET><![CDATA[hda]]></TARGET>', "
                    "'%s<TARGET><![CDATA[hda]]></TARGET>') WHERE oid = %d" % (SCRIPT, vm))
        refresh_json(db)
        before = checksum(db)
        if via == "sqlite":
            args = ["--catalog", "sqlite:" + db, "--one-lock", LOCK]
        else:
            uri, session = start_responder(db)
            args = ["--catalog", uri, "--auth", session]
        journal = os.path.join(T, "crlf-%s-%s.json" % (variant, via))
        ferry(*args, "--storage", "none", "--vm", 43, "--to-cluster", 100, "--force",
              "--journal", journal)
        body = sql(db, "SELECT body FROM vm_pool WHERE oid = 43")[0][0]
        if SCRIPT not in body:
            fail("%s %s: the CRLFs of START_SCRIPT were not kept" % (variant, via))
        if variant == "7.0" and sql(db, "SELECT body_json FROM vm_pool WHERE oid = 43")[0][0] != \
                body_json_of(body):
            fail("%s %s: body_json is not oned's text of the body" % (variant, via))
        ferry("--rollback", journal, *args[2:])
        if checksum(db) != before:
            fail("%s %s: rollback not byte-exact" % (variant, via))
        print("ok: %s %s: CRLF inside CDATA kept byte for byte, rollback exact" % (variant, via))
