"""Helpers for tests/test-nbd-*.py: a private temp dir, ferry-nbd started in the foreground
on a unix socket (waiting for its pidfile, never a fixed sleep) and stopped by PID with its
exit status checked (under ASan a leak fails the test)."""
import atexit
import os
import shutil
import signal
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
