#!/usr/bin/python3
"""Graceful shutdown: SIGTERM while a write is in flight (held up by nbdkit's delay filter
behind ferry's nbd driver) -> the write completes successfully for the client, ferry-nbd
exits 0, the data is in the backing store; writes without a flush are durable after a
SIGTERM of a file-backed server."""
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import T, Server, fail, make_file, read_file, skip, track, wait_for  # noqa: E402

try:
    import nbd
except ImportError:
    skip("python3-libnbd not installed")

MiB = 1 << 20

# 1. File-backed: unflushed writes are flushed at shutdown.
disk = os.path.join(T, "disk")
make_file(disk, 4 * MiB)
srv = Server(disk)
h = nbd.NBD()
h.connect_uri(srv.uri)
data = os.urandom(MiB)
h.pwrite(data, MiB)
srv.stop()  # exit status 0 checked
assert read_file(disk)[MiB:2 * MiB] == data, "write lost at shutdown"
try:
    h.pread(512, 0)
    fail("connection survived shutdown")
except nbd.Error:
    pass
del h

# 2. A client that never reads its replies cannot hold shutdown up for ever: its reply
#    writes block, and after the grace period (10 s) it is disconnected.
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
srv = Server(disk, name="stuck")
s = socket.socket(socket.AF_UNIX)
s.connect(srv.sock)
s.recv(18)
s.sendall(struct.pack(">I", 1) + struct.pack(">QII", 0x49484156454F5054, 1, 0))  # EXPORT_NAME ""
s.recv(134)
reqs = b"".join(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, 0, 4 * MiB) for i in range(64))
s.setblocking(False)
try:
    s.sendall(reqs)  # 256 MiB of replies nobody reads
except BlockingIOError:
    pass
import select  # noqa: E402
select.select([s], [], [], 20)  # replies are being written (and will block: nobody reads)
t0 = time.monotonic()
srv.stop()
took = time.monotonic() - t0
assert took < 30, "shutdown took %.1f s" % took
assert "disconnecting them" in srv.logtext(), srv.logtext()
s.close()

# 3. In-flight request finishes across SIGTERM.
if not shutil.which("nbdkit"):
    skip("nbdkit not installed")
ksock, kpid, klog = (os.path.join(T, n) for n in ("kit.sock", "kit.pid", "kit.log"))
kit = track(subprocess.Popen(["nbdkit", "-f", "-v", "-U", ksock, "-P", kpid,
                              "--filter=delay", "memory", "size=8M", "delay-write=2"],
                             stderr=open(klog, "w")))
wait_for(lambda: os.path.exists(kpid) and os.path.getsize(kpid) > 0, kpid)
srv = Server("nbd+unix:///?socket=" + ksock, name="proxy")
h = nbd.NBD()
h.connect_uri(srv.uri)
payload = os.urandom(64 * 1024)
cookie = h.aio_pwrite(payload, 4096)
# Wait until the write has reached nbdkit (it is now held for 2 s), then stop ferry-nbd.
wait_for(lambda: "pwrite" in open(klog).read(), "the write to reach nbdkit")
srv.proc.send_signal(signal.SIGTERM)
while not h.aio_command_completed(cookie):
    h.poll(-1)
rc = srv.proc.wait(timeout=60)
if rc != 0:
    fail("ferry-nbd exit %d: %s" % (rc, srv.logtext()))
del h
k = nbd.NBD()
k.connect_unix(ksock)
assert k.pread(len(payload), 4096) == payload, "in-flight write lost"
k.shutdown()
kit.terminate()
kit.wait()
print("shutdown ok")
