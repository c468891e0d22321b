#!/usr/bin/python3
"""A minimal QMP client for test scripts (the product's client is hypervisor/qmp.c).

qmp.py SOCKET COMMAND [ARGUMENTS_JSON]      print the reply's "return" as JSON; on a QMP
                                            error print "CLASS: DESC" on stderr, exit 1
qmp.py SOCKET --wait-event NAME [SECONDS]   print the first event NAME (JSON), exit 1 on timeout
"""
import json
import socket
import sys
import time


def connect(path, timeout=10.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    f = s.makefile("rwb", buffering=0)
    json.loads(f.readline())  # greeting
    f.write(b'{"execute":"qmp_capabilities"}\n')
    while "return" not in json.loads(f.readline()):
        pass
    return s, f


def main():
    path, what = sys.argv[1], sys.argv[2]
    if what == "--wait-event":
        name = sys.argv[3]
        deadline = time.time() + float(sys.argv[4] if len(sys.argv) > 4 else 60)
        s, f = connect(path, max(1.0, deadline - time.time()))
        while True:
            s.settimeout(max(0.1, deadline - time.time()))
            try:
                msg = json.loads(f.readline())
            except (socket.timeout, ValueError):
                print("qmp.py: no %s event" % name, file=sys.stderr)
                return 1
            if msg.get("event") == name:
                print(json.dumps(msg))
                return 0
    s, f = connect(path)
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    req = {"execute": what, "id": 1}
    if args is not None:
        req["arguments"] = args
    f.write(json.dumps(req).encode() + b"\n")
    while True:
        msg = json.loads(f.readline())
        if msg.get("id") != 1:
            continue
        if "error" in msg:
            print("%s: %s" % (msg["error"]["class"], msg["error"]["desc"]), file=sys.stderr)
            return 1
        print(json.dumps(msg["return"]))
        return 0


sys.exit(main())
