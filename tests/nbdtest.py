"""Helpers for tests/test-nbd-*.py: a private temp dir, ferry-nbd started in the foreground
on a unix socket (waiting for its pidfile, never a fixed sleep) and stopped by PID with its
exit status checked (under ASan a leak fails the test)."""
import atexit
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

FERRY_NBD = os.environ["FERRY_NBD"]
T = tempfile.mkdtemp(prefix="ferry-test.")
_procs = []


def _cleanup():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(T, ignore_errors=True)


atexit.register(_cleanup)


def track(proc):
    """Kill this subprocess.Popen at exit if it is still running."""
    _procs.append(proc)
    return proc


def skip(why):
    print("SKIP:", why)
    sys.exit(77)


def fail(why):
    print("FAIL:", why, file=sys.stderr)
    sys.exit(1)


def wait_for(pred, what, limit=30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    fail("timed out waiting for " + what)


class Server:
    """ferry-nbd ARGS... on a fresh unix socket."""

    def __init__(self, *args, name="srv"):
        self.sock = os.path.join(T, name + ".sock")
        self.pidfile = os.path.join(T, name + ".pid")
        self.log = open(os.path.join(T, name + ".log"), "w+")
        self.proc = subprocess.Popen(
            [FERRY_NBD, "--foreground", "--socket", self.sock, "--pidfile", self.pidfile]
            + [str(a) for a in args], stderr=self.log)
        _procs.append(self.proc)

        def ready():
            if self.proc.poll() is not None:
                self.log.seek(0)
                fail("ferry-nbd exited at startup: " + self.log.read())
            return os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0
        wait_for(ready, self.pidfile)
        self.uri = "nbd+unix:///?socket=" + self.sock

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        if rc != 0:
            self.log.seek(0)
            fail("ferry-nbd exited with %d after SIGTERM: %s" % (rc, self.log.read()))

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


def make_file(path, size, data_at=()):
    """A sparse file of `size` bytes with random data blocks at (offset, length) pairs;
    returns its contents."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, n in data_at:
            f.seek(off)
            f.write(os.urandom(n))
    with open(path, "rb") as f:
        return f.read()


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def expect_error(errno_value, fn, *args, **kw):
    import nbd
    try:
        fn(*args, **kw)
    except nbd.Error as e:
        if e.errnum != errno_value:
            fail("%s: expected errno %d, got %r" % (getattr(fn, "__name__", fn), errno_value, e))
        return e
    fail("%s%r succeeded, expected errno %d" % (getattr(fn, "__name__", fn), args, errno_value))


# The protocol's numbers, for RawClient users (doc/proto.md of NetworkBlockDevice/nbd).
MAGIC, IHAVEOPT, REPLY_MAGIC = 0x4e42444d41474943, 0x49484156454F5054, 0x3e889045565a9
REQ_MAGIC, SIMPLE_MAGIC, CHUNK_MAGIC = 0x25609513, 0x67446698, 0x668e33ef
OPT_GO, REP_ACK, REP_INFO = 7, 1, 3


class Closed(Exception):
    pass


class RawClient:
    """A client on a raw unix socket, for requests libnbd would not send (or not that way)."""

    def __init__(self, sock, flags=3):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(20)
        self.s.connect(sock)
        g = self.recv(18)
        magic, opt, hflags = struct.unpack(">QQH", g)
        assert magic == MAGIC and opt == IHAVEOPT and hflags == 3, g
        if flags is not None:
            self.s.sendall(struct.pack(">I", flags))

    def recv(self, n):
        b = b""
        while len(b) < n:
            x = self.s.recv(n - len(b))
            if not x:
                raise Closed()
            b += x
        return b

    def option(self, opt, data=b"", length=None):
        ln = len(data) if length is None else length
        self.s.sendall(struct.pack(">QII", IHAVEOPT, opt, ln) + data)

    def reply(self):
        magic, opt, typ, ln = struct.unpack(">QIII", self.recv(20))
        assert magic == REPLY_MAGIC, hex(magic)
        return opt, typ, self.recv(ln)

    def go(self, name=b"vol"):
        self.option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        while True:
            _, typ, _ = self.reply()
            if typ == REP_ACK:
                return
            assert typ == REP_INFO, hex(typ)

    def request(self, cmd, off, ln, flags=0, handle=1, payload=b""):
        self.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, handle, off, ln) + payload)

    def simple(self):
        magic, err, handle = struct.unpack(">IIQ", self.recv(16))
        assert magic == SIMPLE_MAGIC, hex(magic)
        return err, handle

    def closed_by_server(self):
        try:
            self.s.settimeout(10)
            while self.s.recv(65536):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:  # reset, broken pipe, a TLS session cut (ssl.SSLError)
            return True

    def close(self):
        self.s.close()
