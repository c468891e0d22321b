#!/usr/bin/python3
"""Hostile clients on raw sockets: bad magic, bad flags, unknown and malformed options,
oversized option data, bad requests, oversized writes, clients vanishing mid-request,
pipelined requests in odd pieces, random garbage.  After each case the server is still up, serves another client correctly, and the
volume is unchanged (sha256)."""
import hashlib
import os
import random
import socket
import struct
import sys

sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import T, Closed, RawClient, Server, fail, make_file, read_file, skip  # noqa: E402

try:
    import nbd
except ImportError:
    skip("python3-libnbd not installed")

from nbdtest import IHAVEOPT, REQ_MAGIC, SIMPLE_MAGIC  # noqa: E402
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
OPT_STRUCTURED, OPT_LIST_META, OPT_SET_META = 8, 9, 10
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
ERR_UNSUP, ERR_POLICY, ERR_INVALID, ERR_UNKNOWN = 0x80000001, 0x80000002, 0x80000003, 0x80000006
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
EINVAL, ENOSPC = 22, 28

MiB = 1 << 20
SIZE = 8 * MiB
disk = os.path.join(T, "disk")
content = make_file(disk, SIZE, [(0, 2 * MiB), (6 * MiB, MiB)])
digest = hashlib.sha256(content).hexdigest()
srv = Server("--export-name", "vol", disk)


def Raw(flags=3):
    return RawClient(srv.sock, flags)


def check_healthy(case):
    """The server is up, a real client reads the right bytes, and nothing changed."""
    if not srv.alive():
        fail("%s: server died: %s" % (case, srv.logtext()))
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///vol?socket=" + srv.sock)
    if h.pread(MiB, 0) != content[:MiB] or h.pread(MiB, 6 * MiB) != content[6 * MiB:7 * MiB]:
        fail("%s: wrong data afterwards" % case)
    h.shutdown()
    if hashlib.sha256(read_file(disk)).hexdigest() != digest:
        fail("%s: the volume changed" % case)
    print("ok:", case)


def case(name):
    def wrap(fn):
        fn()
        check_healthy(name)
    return wrap


@case("unknown client flags are dropped")
def _():
    r = Raw(flags=0x80)
    assert r.closed_by_server()


@case("bad option magic is dropped")
def _():
    r = Raw()
    r.s.sendall(struct.pack(">QII", 0x1122334455667788, OPT_LIST, 0))
    assert r.closed_by_server()


@case("unknown option gets ERR_UNSUP and the session continues")
def _():
    r = Raw()
    r.option(0x4242, b"junk")
    opt, typ, msg = r.reply()
    assert opt == 0x4242 and typ == ERR_UNSUP, (opt, hex(typ))
    assert b"not supported" in msg, msg
    r.option(5)  # STARTTLS without --tls: refused by policy (the spec's NOTLS mode)
    assert r.reply()[1] == ERR_POLICY
    r.option(OPT_LIST)
    opt, typ, data = r.reply()
    assert typ == REP_SERVER and data[4:7] == b"vol", data
    assert r.reply()[1] == REP_ACK
    r.option(OPT_ABORT)
    assert r.reply()[1] == REP_ACK
    assert r.closed_by_server()


@case("oversized option data is dropped without reading it")
def _():
    r = Raw()
    r.option(OPT_INFO, length=1 << 30)
    assert r.closed_by_server()


@case("malformed options get ERR_INVALID")
def _():
    r = Raw()
    r.option(OPT_LIST, b"x")  # LIST takes no data
    assert r.reply()[1] == ERR_INVALID
    r.option(OPT_INFO, struct.pack(">I", 1000) + b"vol" + struct.pack(">H", 0))  # name too long
    assert r.reply()[1] == ERR_INVALID
    r.option(OPT_INFO, struct.pack(">I", 3) + b"vol" + struct.pack(">H", 5))  # 5 requests, none sent
    assert r.reply()[1] == ERR_INVALID
    r.option(OPT_INFO, b"\0")
    assert r.reply()[1] == ERR_INVALID
    q = struct.pack(">I", 3) + b"vol" + struct.pack(">I", 1) + struct.pack(">I", 999) + b"base:"
    r.option(OPT_SET_META, q)  # before STRUCTURED_REPLY
    assert r.reply()[1] == ERR_INVALID
    r.option(OPT_STRUCTURED, b"data")
    assert r.reply()[1] == ERR_INVALID
    r.option(OPT_STRUCTURED)
    assert r.reply()[1] == REP_ACK
    r.option(OPT_SET_META, q)  # query length past the end
    assert r.reply()[1] == ERR_INVALID
    r.option(OPT_LIST_META, struct.pack(">I", 3) + b"vol" + struct.pack(">I", 1) +
             struct.pack(">I", 5) + b"nocol")  # no namespace colon
    assert r.reply()[1] == ERR_INVALID
    r.option(OPT_INFO, struct.pack(">I", 5) + b"other" + struct.pack(">H", 0))
    assert r.reply()[1] == ERR_UNKNOWN
    r.option(OPT_INFO, struct.pack(">I", 3) + b"v\0l" + struct.pack(">H", 0))
    assert r.reply()[1] == ERR_INVALID
    r.close()


@case("EXPORT_NAME of an unknown export is dropped")
def _():
    r = Raw()
    r.option(OPT_EXPORT_NAME, b"wrong")
    assert r.closed_by_server()


@case("EXPORT_NAME with NO_ZEROES sends 10 bytes, without sends 134")
def _():
    for flags, n in ((3, 10), (1, 134)):
        r = Raw(flags=flags)
        r.option(OPT_EXPORT_NAME, b"vol")
        reply = r.recv(n)
        assert struct.unpack(">Q", reply[:8])[0] == SIZE
        r.request(CMD_READ, 0, 4096, handle=7)
        err, handle = r.simple()
        assert err == 0 and handle == 7 and r.recv(4096) == content[:4096]
        r.close()


@case("vanishing in the middle of the handshake")
def _():
    r = Raw(flags=None)
    r.close()
    r = Raw()
    r.s.sendall(struct.pack(">QI", IHAVEOPT, OPT_GO))  # half an option header
    r.close()
    r = Raw()
    r.option(OPT_GO, length=100)
    r.s.sendall(b"x" * 10)  # part of the data
    r.close()


@case("bad request magic is dropped")
def _():
    r = Raw()
    r.go()
    r.s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, CMD_READ, 1, 0, 512))
    assert r.closed_by_server()


@case("unknown command, bad flags, past-the-end and oversized requests get errors")
def _():
    r = Raw()
    r.go()
    r.request(99, 0, 512, handle=1)
    assert r.simple() == (EINVAL, 1)
    r.request(CMD_READ, 0, 512, flags=0x8000, handle=2)
    assert r.simple() == (EINVAL, 2)
    r.request(CMD_READ, SIZE, 512, handle=3)
    assert r.simple() == (EINVAL, 3)
    r.request(CMD_READ, 0, 33 * MiB, handle=4)  # over the maximum and past the end
    assert r.simple() == (EINVAL, 4)
    r.request(CMD_WRITE, SIZE - 100, 512, handle=5, payload=b"E" * 512)  # payload is consumed
    assert r.simple() == (ENOSPC, 5)
    r.request(CMD_FLUSH, 5, 0, handle=6)  # reserved fields must be zero
    assert r.simple() == (EINVAL, 6)
    r.request(7, 0, 512, handle=8)  # BLOCK_STATUS without a context
    assert r.simple() == (EINVAL, 8)
    r.request(CMD_READ, 4096, 4096, handle=9)  # still in sync
    assert r.simple() == (0, 9) and r.recv(4096) == content[4096:8192]
    r.close()


@case("an oversized write is dropped and writes nothing")
def _():
    r = Raw()
    r.go()
    r.request(CMD_WRITE, 0, 64 * MiB, handle=1, payload=b"X" * 65536)
    assert r.closed_by_server()


@case("vanishing in the middle of a write payload writes nothing")
def _():
    r = Raw()
    r.go()
    r.request(CMD_WRITE, 0, MiB, handle=1, payload=b"V" * (MiB // 2))
    r.close()


stalled = []


@case("stalled clients (mid-handshake, mid-payload) do not hold up others")
def _():
    r = Raw(flags=None)  # never sends its flags
    stalled.append(r)
    r = Raw()
    r.go()
    r.request(CMD_WRITE, 0, MiB, handle=1, payload=b"S" * 1000)  # and then nothing
    stalled.append(r)
    # check_healthy runs while both are still connected


for r in stalled:
    r.close()


@case("pipelined requests then vanishing without reading replies")
def _():
    r = Raw()
    r.go()
    reqs = b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, i, (i % 8) * MiB, MiB)
                    for i in range(64))
    r.s.sendall(reqs)
    r.close()


@case("DISC answers in-flight requests first")
def _():
    r = Raw()
    r.go()
    reqs = b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, i, i * 4096, 4096)
                    for i in range(16))
    r.s.sendall(reqs + struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_DISC, 99, 0, 0))
    seen = set()
    for _ in range(16):
        err, handle = r.simple()
        assert err == 0
        assert r.recv(4096) == content[handle * 4096:(handle + 1) * 4096]
        seen.add(handle)
    assert seen == set(range(16))
    assert r.closed_by_server()


@case("pipelined reads and writes sent in odd pieces, one byte to several requests")
def _():
    # The receive buffer (nbd-server/inbuf.c) must frame requests the same however they
    # arrive: headers split, a header and payloads in one piece, payloads below and above
    # the buffer's direct-read size.  Each write puts back the volume's own bytes at its
    # offset, so a payload framed wrong changes the volume (check_healthy's sha256).
    rnd = random.Random(77)
    r = Raw()
    r.go()
    stream, expect = b"", {}
    for i in range(60):
        size = rnd.choice([512, 4096, 40960, 73728, 4096])
        off = rnd.randrange(0, (2 * MiB - size) // 512) * 512
        if i % 3 == 2:
            stream += struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, i, off, 4096)
            expect[i] = content[off:off + 4096]
        else:
            stream += struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_WRITE, i, off, size)
            stream += content[off:off + size]
            expect[i] = None
    stream += struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_FLUSH, 1000, 0, 0)
    expect[1000] = None
    pos = 0
    while pos < len(stream):
        n = rnd.choice([1, 3, 27, 28, 29, 600, 5000, 70000])
        r.s.sendall(stream[pos:pos + n])
        pos += n
    for _ in expect:
        err, handle = r.simple()
        assert err == 0, (handle, err)
        if expect[handle] is not None:
            assert r.recv(4096) == expect[handle], "read %d: wrong bytes" % handle
    r.close()


@case("random garbage after the handshake and during options")
def _():
    rnd = random.Random(1234)
    for i in range(40):
        r = Raw()
        if i % 2:
            r.go()
        junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 400)))
        try:
            r.s.sendall(junk)
        except OSError:
            pass
        r.close()


srv.stop()
print("hostile ok")
