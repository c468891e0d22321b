#!/usr/bin/python3
"""ferry-nbd is fair to every client (issue 13, item 6).  Each scenario first loads the server
with connections that misbehave, then a new client connects and reads 4 KiB:

  silent     --max-clients connections that connect and never send a byte (before: every
             new client refused until they went away);
  timeout    one silent connection is cut after --handshake-timeout;
  pipelined  40 connections that pipeline 32 MiB reads and never read a reply (before: the
             new client's read waited 10 s for buffer memory and failed with ENOMEM);
  idle       40 connections that once read in bulk (16 x 4 MiB in flight), then sit idle
             (before: their kept buffers held the shared budget: the same ENOMEM).

The bound: the issue asks for the new client's 4 KiB read in under 100 ms.  This test asserts
that the read SUCCEEDS (no refusal, no ENOMEM, no timeout) and, with a generous margin for a
shared or sanitizer-slowed machine, that it takes under max(2 s, 20 x a baseline measured
here before any load) -- the old failure took 10 s.  The measured times are printed against
the 100 ms target.

On a unix socket (the default) the probe's time is connect + handshake + read.  Over the
two-host link (tests/test-net-fairness.sh sets FAIRNESS_URI, FAIRNESS_TCP=HOST:PORT,
FAIRNESS_TLS=client certificate dir and FAIRNESS_LOG=the server's log, and starts the
server with --max-clients 128 --handshake-timeout 3 --buffer-memory 512M) the handshake
alone is several round trips of 20 ms, so the bound is on the read, and the idle scenario
(640 MiB of bulk reads to set up) is left to the unix run."""
import os
import socket
import ssl
import struct
import sys
import time

sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import T, Server, fail, make_file, skip  # noqa: E402

try:
    import nbd
except ImportError:
    skip("python3-libnbd not installed")

IHAVEOPT, REQ_MAGIC = 0x49484156454F5054, 0x25609513
OPT_GO, REP_ACK = 7, 1
MiB = 1 << 20
MAX_CLIENTS = 128

TCP = os.environ.get("FAIRNESS_TCP")
if TCP:
    URI = os.environ["FAIRNESS_URI"]
    TLS_DIR = os.environ["FAIRNESS_TLS"]
    SERVER_LOG = os.environ["FAIRNESS_LOG"]
    content = open(os.environ["FAIRNESS_IMAGE"], "rb").read(4096)
    srv = None
else:
    disk = os.path.join(T, "disk")
    content = make_file(disk, 64 * MiB, [(0, MiB)])
    # 512 MiB of shared request memory (instead of 2 GiB) keeps the test's footprint small;
    # the per-connection floor and cap are the built-in ones.
    srv = Server("--max-clients", MAX_CLIENTS, "--handshake-timeout", 3, "--buffer-memory",
                 "512M", disk)
    URI = srv.uri


def server_log():
    if srv:
        return srv.logtext()
    return open(SERVER_LOG).read()


def server_alive():
    return srv.alive() if srv else True


def probe():
    """A new client: connect, handshake, read 4 KiB; seconds taken by what the bound covers
    (everything on a unix socket, the read over the link)."""
    t0 = time.monotonic()
    h = nbd.NBD()
    h.set_uri_allow_local_file(True)  # tls-certificates= over the link
    h.connect_uri(URI)
    t1 = time.monotonic()
    data = h.pread(4096, 0)
    dt = time.monotonic() - (t1 if TCP else t0)
    h.shutdown()
    if data != content[:4096]:
        fail("probe read wrong data")
    return dt


def baseline():
    times = sorted(probe() for _ in range(10))
    return times[len(times) // 2]


BASE = baseline()
LIMIT = max(2.0, 20 * BASE)
WHAT = "4 KiB read" if TCP else "connect + handshake + 4 KiB read"
print("baseline: new client's %s in %.1f ms (limit here %.0f ms, target 100 ms)"
      % (WHAT, BASE * 1000, LIMIT * 1000))


def check(scenario):
    try:
        dt = probe()
    except nbd.Error as e:
        fail("%s: the new client's 4 KiB read failed: %s" % (scenario, e))
    print("%s: new client's %s in %.1f ms (target 100 ms)" % (scenario, WHAT, dt * 1000))
    if dt > LIMIT:
        fail("%s: the read took %.2f s (limit %.2f s)" % (scenario, dt, LIMIT))
    if not server_alive():
        fail("%s: server died: %s" % (scenario, server_log()))


def raw_connect():
    if TCP:
        host, port = TCP.rsplit(":", 1)
        return socket.create_connection((host, int(port)))
    s = socket.socket(socket.AF_UNIX)
    s.connect(srv.sock)
    return s


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x:
            raise ConnectionError("closed")
        b += x
    return b


def reply(s):
    _, _, typ, ln = struct.unpack(">QIII", recv_exact(s, 20))
    recv_exact(s, ln)
    return typ


def starttls(s):
    """NBD_OPT_STARTTLS, then TLS with the client certificate (the server requires TLS)."""
    s.sendall(struct.pack(">QII", IHAVEOPT, 5, 0))
    if reply(s) != REP_ACK:
        fail("STARTTLS refused")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(TLS_DIR, "ca-cert.pem"))
    ctx.load_cert_chain(os.path.join(TLS_DIR, "client-cert.pem"),
                        os.path.join(TLS_DIR, "client-key.pem"))
    ctx.check_hostname = False
    return ctx.wrap_socket(s)


def raw_transmission():
    """A connection in the transmission phase (simple replies)."""
    s = raw_connect()
    recv_exact(s, 18)
    s.sendall(struct.pack(">I", 3))
    if TCP:
        s = starttls(s)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 6) + struct.pack(">IH", 0, 0))
    while reply(s) != REP_ACK:
        pass
    return s


# --- silent: every slot held by connections that never send anything -------------------
silent = [raw_connect() for _ in range(MAX_CLIENTS)]
time.sleep(0.2)  # let the server accept them all
check("silent (%d connections that never speak)" % MAX_CLIENTS)
for s in silent:
    s.close()

# --- timeout: a silent connection is cut by the server -----------------------------------
s = raw_connect()
recv_exact(s, 18)  # the greeting, then nothing from us
s.settimeout(60)
t0 = time.monotonic()
try:
    left = s.recv(1)
except ConnectionResetError:
    left = b""
if left != b"":
    fail("silent connection: expected the server to close it, got %r" % left)
print("timeout: silent connection closed by the server after %.1f s (--handshake-timeout 3)"
      % (time.monotonic() - t0))
s.close()
if "handshake not finished within 3 s" not in server_log():
    fail("no handshake-timeout message in the log: " + server_log())

# --- pipelined: 40 connections with 32 MiB reads in flight, replies never read ----------
hogs = []
for i in range(40):
    s = raw_transmission()
    reqs = b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, 0, k, 0, 32 * MiB) for k in range(32))
    s.sendall(reqs)  # 896 bytes: fits any socket buffer
    hogs.append(s)
time.sleep(1.0)  # the server reads the requests and fills its buffers
check("pipelined (40 connections x 32 x 32 MiB reads, replies never read)")
for s in hogs:
    s.close()

if TCP:
    print("ok: every new client served (idle scenario: see the unix run)")
    sys.exit(0)

# --- idle: 40 connections that read in bulk once, then idle ------------------------------
bufs = [nbd.Buffer(4 * MiB) for _ in range(16)]
idle = []
for i in range(40):
    h = nbd.NBD()
    try:
        h.connect_uri(URI)
    except nbd.Error as e:
        fail("idle connection %d: %s; server log:\n%s" % (i, e, srv.logtext()[-20000:]))
    cookies = [h.aio_pread(b, k * 4 * MiB) for k, b in enumerate(bufs)]
    for c in cookies:
        while not h.aio_command_completed(c):
            h.poll(-1)
    idle.append(h)
check("idle (40 connections that read 16 x 4 MiB at once, now idle)")
for h in idle:
    h.shutdown()

srv.stop()
print("ok: every new client served")
