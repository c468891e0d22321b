#!/usr/bin/python3
# The control protocol against hostile and careless clients: every malformed request gets
# {"ok":false,"error":...} naming the problem, over-long lines are dropped with one error,
# replies come in request order, and no client (silent, flooding, binary, too many) stops
# the server from serving the next one.  Runs tests/control-server over a plain volume.
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

T = tempfile.mkdtemp(prefix="ferry-test.")
SOCK = os.path.join(T, "ctl.sock")
PIDFILE = os.path.join(T, "srv.pid")
server = None


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect(SOCK)  # blocking: waits for room in the listen backlog instead of EAGAIN
    s.settimeout(20)
    return s


def read_lines(s, n):
    """Read exactly n reply lines from s."""
    buf = b""
    while buf.count(b"\n") < n:
        d = s.recv(1 << 16)
        if not d:
            fail("server closed the connection after %r" % buf[-200:])
        buf += d
    lines = buf.split(b"\n")
    if len(lines) != n + 1 or lines[-1]:
        fail("expected %d lines, got %r" % (n, buf[-300:]))
    return [json.loads(l) for l in lines[:-1]]


def request(raw, s=None):
    """Send raw bytes (one request line), return the parsed reply."""
    own = s is None
    s = s or connect()
    s.sendall(raw)
    (r,) = read_lines(s, 1)
    if own:
        s.close()
    return r


def expect_error(raw, text):
    r = request(raw)
    if r.get("ok") is not False or r.get("error") != text:
        fail("%r: got %r, want error %r" % (raw[:80], r, text))
    print("ok: %r -> %s" % (raw[:40], text))


def expect_status(s=None):
    r = request(b'{"command":"status"}\n', s)
    if r.get("ok") is not True or r["status"]["state"] != "direct":
        fail("status: %r" % r)
    return r


try:
    server = subprocess.Popen([os.environ["CONTROL_SERVER"], "--pidfile", PIDFILE,
                               "--size", "64M", SOCK])
    for _ in range(600):
        if os.path.exists(PIDFILE) and os.path.getsize(PIDFILE):
            break
        if server.poll() is not None:
            fail("control-server exited with %d" % server.returncode)
        time.sleep(0.05)
    else:
        fail("control-server did not start")

    r = expect_status()
    want = {"state": "direct", "size": 64 << 20, "region_size": 0, "regions_total": 0,
            "regions_hydrated": 0, "bytes_copied": 0, "bytes_fetched": 0, "bytes_skipped": 0,
            "rate_limit": 0, "rate": 0.0, "eta": None, "percent": 100.0, "last_error": "",
            "clients": 0, "control_clients": 1, "program": "control-server",
            "pid": server.pid}
    if r["status"] != want:
        fail("status %r, want %r" % (r["status"], want))

    # Each malformed request, answered with the exact problem.
    expect_error(b'{bad\n', "invalid JSON at column 4: string or '}' expected near 'bad'")
    expect_error(b'{"command":"status"\n', "invalid JSON at column 19: '}' expected near end of file")
    expect_error(b'{"command":"status","command":"pause"}\n',
                 "invalid JSON at column 29: duplicate object key near '\"command\"'")
    expect_error(b'[1,2]\n', 'request must be a JSON object, like {"command":"status"}')
    expect_error(b'"status"\n', 'request must be a JSON object, like {"command":"status"}')
    expect_error(b'{}\n', 'missing field "command"')
    expect_error(b'{"command":7}\n', 'field "command" must be a string')
    expect_error(b'{"command":null}\n', 'field "command" must be a string')
    expect_error(b'{"command":"reboot"}\n',
                 'unknown command "reboot" (expected status, pause, resume, release, set-rate, wait)')
    expect_error(b'{"command":"STATUS"}\n',
                 'unknown command "STATUS" (expected status, pause, resume, release, set-rate, wait)')
    expect_error(b'{"command":"set-rate"}\n',
                 'set-rate: missing field "rate" (bytes/s, or a size like "50M")')
    expect_error(b'{"command":"set-rate","rate":"fast"}\n',
                 "set-rate: rate: 'fast' is not a size (expected e.g. 65536, 64K, 4M, 2G)")
    expect_error(b'{"command":"set-rate","rate":"5Q"}\n',
                 "set-rate: rate: '5Q' has an unknown unit (use K, M, G, T)")
    expect_error(b'{"command":"set-rate","rate":-1}\n', "set-rate: rate -1 is negative")
    expect_error(b'{"command":"set-rate","rate":1e300}\n', "set-rate: rate 1e+300 is too large")
    expect_error(b'{"command":"set-rate","rate":true}\n',
                 'set-rate: field "rate" must be a number of bytes/s or a size string like "50M"')
    expect_error(b'{"command":"wait","timeout":"soon"}\n',
                 'wait: field "timeout" must be a number of seconds >= 0')
    expect_error(b'{"command":"wait","timeout":-2}\n',
                 'wait: field "timeout" must be a number of seconds >= 0')
    expect_error(b'{"command":"pause"}\n',
                 'pause: control-server serves a plain volume (state "direct"): there is no hydrator')
    expect_error(b'{"command":"resume"}\n',
                 'resume: control-server serves a plain volume (state "direct"): there is no hydrator')
    expect_error(b'{"command":"set-rate","rate":"50M"}\n',
                 'set-rate: control-server serves a plain volume (state "direct"): there is no hydrator')
    expect_error(b'{"command":"status"}\x00\n', "invalid JSON: the request contains a NUL byte")
    expect_error(b'\xff\xfe garbage\n', "invalid JSON at column 0: unable to decode byte 0xff")

    # The id is echoed; CRLF and blank lines are accepted.
    r = request(b'\n  \r\n{"command":"status","id":{"n":[1,2]}}\r\n')
    if r.get("id") != {"n": [1, 2]} or r.get("ok") is not True:
        fail("id not echoed: %r" % r)

    # Over-long line: one error, the rest of the line dropped, the connection goes on.
    s = connect()
    s.sendall(b"x" * 70000)
    s.sendall(b"y" * 100000 + b"\n" + b'{"command":"status","id":2}\n')
    r1, r2 = read_lines(s, 2)
    if r1 != {"ok": False, "error": "request line longer than 65536 bytes: dropped"}:
        fail("over-long line: %r" % r1)
    if r2.get("id") != 2 or r2.get("ok") is not True:
        fail("after over-long line: %r" % r2)
    # A line of exactly 65536 bytes is still a request.
    body = b'{"command":"status","id":3}'
    r = request(body + b" " * (65536 - len(body)) + b"\n", s)
    if r.get("id") != 3:
        fail("65536-byte line refused: %r" % r)
    s.close()
    print("ok: over-long line dropped with one error, 65536 bytes accepted")

    # Pipelined requests: replies in order.
    s = connect()
    s.sendall(b"".join(b'{"command":"status","id":%d}\n' % i for i in range(200)))
    ids = [r["id"] for r in read_lines(s, 200)]
    if ids != list(range(200)):
        fail("pipelined replies out of order")
    s.close()
    print("ok: 200 pipelined requests answered in order")

    # A silent client holding half a line, a flooder that never reads, and a client that
    # vanishes mid-line do not stop another client.
    silent = connect()
    silent.sendall(b'{"command":')
    flood = connect()
    flood.setblocking(False)
    sent = 0
    try:
        while sent < (8 << 20):
            sent += flood.send(b'{"command":"status"}\n' * 1000)
    except BlockingIOError:
        pass
    vanish = connect()
    vanish.sendall(b'{"command":"sta')
    vanish.close()
    expect_status()
    flood.close()
    silent.close()
    print("ok: silent, flooding (%d bytes unread) and vanishing clients do not block" % sent)

    def wait_released():
        for _ in range(200):  # the server notices closes on its next poll
            r = request(b'{"command":"status"}\n')
            if r.get("ok") and r["status"]["control_clients"] == 1:
                return
            time.sleep(0.05)
        fail("closed connections still counted: %r" % r)

    wait_released()
    # Too many connections: the extra ones are told so, the others keep working.
    conns = [connect() for _ in range(140)]
    busy = 0
    for c in conns[128:]:
        c.settimeout(10)
        data = c.recv(4096)
        if json.loads(data) == {"ok": False, "error": "too many control connections"}:
            busy += 1
    if busy != 12:
        fail("%d of 12 extra connections told 'too many'" % busy)
    expect_status(conns[0])
    for c in conns:
        c.close()
    wait_released()
    print("ok: 128 connections served, extra refused, all released")

    # wait on a plain volume answers at once.
    r = request(b'{"command":"wait","timeout":1}\n')
    if r.get("ok") is not True or r["status"]["state"] != "direct":
        fail("wait on direct: %r" % r)

    # A clean stop: exit 0 (leak checkers run at exit), socket removed.
    server.send_signal(signal.SIGTERM)
    if server.wait(30) != 0:
        fail("control-server exit status %d" % server.returncode)
    server = None
    if os.path.exists(SOCK):
        fail("socket left behind")
    print("control protocol ok")
finally:
    if server is not None:
        server.kill()
        server.wait()
    shutil.rmtree(T, ignore_errors=True)
