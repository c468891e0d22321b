#!/usr/bin/python3
"""ferry-nbd --tls=require on raw sockets, against the NBD spec's FORCEDTLS mode: before TLS
every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD, NBD_OPT_EXPORT_NAME ends the
session, STARTTLS with data is invalid; after the upgrade (Python's ssl, with a client
certificate) a second STARTTLS is invalid, options negotiated in clear are forgotten, and
the export is served; a client that answers the ACK with plaintext gets nothing.  The
server survives all of it."""
import os
import ssl
import struct
import subprocess
import sys

sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import IHAVEOPT, T, RawClient, Server, fail, make_file  # noqa: E402

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_GO, OPT_STRUCTURED = 1, 2, 3, 5, 7, 8
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
ERR_INVALID, ERR_TLS_REQD = 0x80000003, 0x80000005
REQ_MAGIC, SIMPLE_MAGIC = 0x25609513, 0x67446698

# Certificates from tests/lib-tls.sh (one shell call).
subprocess.run(["bash", "-c", '. "$TESTS_DIR/functions.sh"; . "$TESTS_DIR/lib-tls.sh"; '
                'make_tls >/dev/null && cp -r "$TLS" "$1"; trap - EXIT; rm -rf "$T"',
                "sh", os.path.join(T, "tls")], check=True,
               env=dict(os.environ, FERRY=os.environ.get("FERRY", "ferry")))
TLS = os.path.join(T, "tls")
disk = os.path.join(T, "disk")
content = make_file(disk, 1 << 20, [(0, 1 << 20)])
srv = Server("--tls", "require", "--tls-certificates", os.path.join(TLS, "server"), disk)


def Raw():
    return RawClient(srv.sock)


def expect(cond, what):
    if not cond:
        fail(what)
    print("ok:", what)


# Before TLS: refused with TLS_REQD, and the session goes on.
r = Raw()
for opt, data in ((OPT_LIST, b""), (OPT_STRUCTURED, b""),
                  (OPT_GO, struct.pack(">IH", 0, 0))):
    r.option(opt, data)
    _, typ, msg = r.reply()
    expect(typ == ERR_TLS_REQD and b"requires TLS" in msg, "option %d before TLS: ERR_TLS_REQD" % opt)
r.option(OPT_STARTTLS, b"x")
expect(r.reply()[1] == ERR_INVALID, "STARTTLS with data: ERR_INVALID")
r.option(OPT_ABORT)
expect(r.reply()[1] == REP_ACK, "ABORT before TLS is answered")

# EXPORT_NAME before TLS cannot be refused by a reply: the session ends.
r = Raw()
r.option(OPT_EXPORT_NAME, b"")
expect(r.closed_by_server(), "EXPORT_NAME before TLS drops the connection")

# STARTTLS acknowledged, then plaintext instead of a TLS handshake: nothing more.
r = Raw()
r.option(OPT_STARTTLS)
expect(r.reply()[1] == REP_ACK, "STARTTLS: ACK")
r.s.sendall(struct.pack(">QII", IHAVEOPT, OPT_LIST, 0))
expect(r.closed_by_server(), "plaintext after the STARTTLS ACK: no fallback, dropped")


def upgrade(r):
    r.option(OPT_STARTTLS)
    expect(r.reply()[1] == REP_ACK, "STARTTLS: ACK")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(TLS, "client", "ca-cert.pem"))
    ctx.load_cert_chain(os.path.join(TLS, "client", "client-cert.pem"),
                        os.path.join(TLS, "client", "client-key.pem"))
    r.s = ctx.wrap_socket(r.s, server_hostname="localhost")
    expect(r.s.version() in ("TLSv1.2", "TLSv1.3"), "TLS session: " + str(r.s.version()))


# The real thing: TLS with a client certificate.
r = Raw()
upgrade(r)
r.option(OPT_STARTTLS)
expect(r.reply()[1] == ERR_INVALID, "a second STARTTLS: ERR_INVALID")
r.option(OPT_LIST)
opt, typ, data = r.reply()
expect(typ == REP_SERVER, "LIST over TLS is served")
r.reply()
r.option(OPT_GO, struct.pack(">IH", 0, 0))
while True:
    _, typ, _ = r.reply()
    if typ == REP_ACK:
        break
    expect(typ == REP_INFO, "INFO replies")


def read_simple(r, what):
    r.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 0, 7, 4096, 4096))
    magic, err, handle = struct.unpack(">IIQ", r.recv(16))
    expect(magic == SIMPLE_MAGIC and err == 0 and handle == 7, what + ": a simple reply")
    expect(r.recv(4096) == content[4096:8192], what + ": the right bytes")


read_simple(r, "READ over TLS")
if not srv.alive():
    fail("server died: " + srv.logtext())
srv.stop()

# --tls=on: structured replies negotiated in clear do not survive STARTTLS.
srv = Server("--tls", "on", "--tls-certificates", os.path.join(TLS, "server"), disk, name="on")
r = Raw()
r.option(OPT_STRUCTURED)
expect(r.reply()[1] == REP_ACK, "--tls=on: STRUCTURED_REPLY in clear is accepted")
upgrade(r)
r.option(OPT_GO, struct.pack(">IH", 0, 0))
while r.reply()[1] != REP_ACK:
    pass
read_simple(r, "READ after STARTTLS (structured replies forgotten)")
srv.stop()
print("tls require ok")
