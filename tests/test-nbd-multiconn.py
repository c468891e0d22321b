#!/usr/bin/python3
"""Multi-conn: writes on one connection, a flush on another, and the data is durable and
visible to every connection (NBD_FLAG_CAN_MULTI_CONN is only advertised when a flush
anywhere covers every completed write: the volume's VOLUME_MULTI_CONN)."""
import os
import sys

sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import T, Server, make_file, read_file, skip  # noqa: E402

try:
    import nbd
except ImportError:
    skip("python3-libnbd not installed")

MiB = 1 << 20
disk = os.path.join(T, "disk")
make_file(disk, 16 * MiB)
srv = Server(disk)
hs = []
for i in range(4):
    h = nbd.NBD()
    h.connect_uri(srv.uri)
    assert h.can_multi_conn() == 1
    hs.append(h)

# Writes spread over connections 0..2, pipelined, each waited for; flush on connection 3.
blobs = {}
cookies = []
for i in range(48):
    off = i * 256 * 1024
    blobs[off] = os.urandom(256 * 1024)
    h = hs[i % 3]
    cookies.append((h, h.aio_pwrite(blobs[off], off)))
for h, c in cookies:
    while not h.aio_command_completed(c):
        h.poll(-1)
hs[3].flush()
# Visible through every connection, and in the file (fdatasync'ed by the flush).
for off, b in blobs.items():
    for h in hs:
        assert h.pread(len(b), off) == b, off
data = read_file(disk)
for off, b in blobs.items():
    assert data[off:off + len(b)] == b, off
for h in hs:
    h.shutdown()

# nbdcopy with several connections (it uses multi-conn when advertised).
src = os.path.join(T, "src")
want = make_file(src, 16 * MiB, [(MiB, 5 * MiB), (9 * MiB, 3 * MiB)])
import subprocess  # noqa: E402
subprocess.check_call(["nbdcopy", "--connections=4", "--flush", src, srv.uri])
assert read_file(disk) == want
srv.stop()

# One worker per connection still answers a deep pipeline (in order, then).
one = Server("--threads", "1", disk, name="one")
h = nbd.NBD()
h.connect_uri(one.uri)
bufs = [(off, nbd.Buffer(65536)) for off in range(0, 8 * MiB, 65536)]
cookies = [(off, b, h.aio_pread(b, off)) for off, b in bufs]
while h.aio_in_flight() > 0:
    h.poll(-1)
for off, b, c in cookies:
    assert h.aio_command_completed(c)
    assert bytes(b.to_bytearray()) == want[off:off + 65536], off
h.shutdown()
one.stop()
print("multiconn ok")
