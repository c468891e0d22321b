#!/usr/bin/python3
"""The host end of the test guest's serial console (tests/lib-guest.sh).

serial.py SOCKET LOG INPUT: listen on the unix socket SOCKET (qemu connects to it with
`-chardev socket,path=SOCKET`), write every line the guest prints to LOG prefixed with the
host's CLOCK_REALTIME at arrival ("1712345678.123456 ferry-guest: hb ..."), and send to the
guest whatever is written into the FIFO INPUT.  The guest's own clock stops while qemu is
stopped, so only these arrival times show how long the guest was frozen.  Exits when qemu
closes the connection.
"""
import os
import select
import socket
import sys
import time

path, log_path, input_path = sys.argv[1:4]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
srv.close()
os.unlink(path)
inp = os.open(input_path, os.O_RDWR | os.O_NONBLOCK)
log = open(log_path, "ab", buffering=0)
pending = b""
while True:
    ready, _, _ = select.select([conn, inp], [], [])
    if inp in ready:
        data = os.read(inp, 4096)
        if data:
            conn.sendall(data)
    if conn in ready:
        data = conn.recv(65536)
        now = time.time()
        if not data:
            break
        pending += data.replace(b"\r", b"")
        *lines, pending = pending.split(b"\n")
        if lines:
            log.write(b"".join(b"%.6f %s\n" % (now, line) for line in lines))
if pending:
    log.write(b"%.6f %s\n" % (time.time(), pending))
