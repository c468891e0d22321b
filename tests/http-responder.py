#!/usr/bin/python3
"""A tiny HTTP/1.1 server that misbehaves on purpose, for the http driver tests.

  http-responder.py FILE PORTFILE [--mode range|norange|nocr] [--fail-first N]
                    [--fail-code CODE] [--grow-after N] [--no-length] [--pidfile F]

Serves FILE at every path.  Binds 127.0.0.1 on a free port and writes it to PORTFILE.
  range      honour "Range: bytes=A-B" with 206 + Content-Range (the default)
  norange    ignore Range: 200 with the whole body
  nocr       206 but no Content-Range header
  --fail-first N   the first N GET requests answer CODE (default 503)
  --grow-after N   after N ranged GETs the file "grows" by 1 MiB (Content-Range total changes)
  --no-length      HEAD answers without Content-Length (the client must probe with a GET)
  --stall-first N  the first N ranged GETs wait 3 s before answering (client timeouts)
"""
import argparse
import http.server
import os
import re
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("file")
ap.add_argument("portfile")
ap.add_argument("--mode", default="range", choices=["range", "norange", "nocr"])
ap.add_argument("--fail-first", type=int, default=0)
ap.add_argument("--fail-code", type=int, default=503)
ap.add_argument("--grow-after", type=int, default=-1)
ap.add_argument("--no-length", action="store_true")
ap.add_argument("--stall-first", type=int, default=0)
ap.add_argument("--pidfile")
args = ap.parse_args()

data = open(args.file, "rb").read()
lock = threading.Lock()
counts = {"get": 0, "ranged": 0, "stalled": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def size(self):
        with lock:
            grown = args.grow_after >= 0 and counts["ranged"] > args.grow_after
        return len(data) + (1 << 20 if grown else 0)

    def do_HEAD(self):
        self.send_response(200)
        if args.no_length:
            # No Content-Length and no body: close so the client is not left waiting.
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(self.size()))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        with lock:
            counts["get"] += 1
            failing = counts["get"] <= args.fail_first
        if failing:
            body = b"try again later\n"
            self.send_response(args.fail_code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng or "")
        if args.mode == "norange" or not m:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        with lock:
            counts["ranged"] += 1
            stall = counts["stalled"] < args.stall_first
            counts["stalled"] += stall
        if stall:
            time.sleep(3)
        size = self.size()
        start, end = int(m.group(1)), min(int(m.group(2)), size - 1)
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", "bytes */%d" % size)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = (data + bytes(size - len(data)))[start:end + 1]
        self.send_response(206)
        if args.mode != "nocr":
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients abort on purpose (norange): no tracebacks


server = Server(("127.0.0.1", 0), Handler)
tmp = args.portfile + ".tmp"
with open(tmp, "w") as f:
    f.write("%d\n" % server.server_address[1])
os.rename(tmp, args.portfile)
if args.pidfile:
    with open(args.pidfile + ".tmp", "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(args.pidfile + ".tmp", args.pidfile)
server.serve_forever()
