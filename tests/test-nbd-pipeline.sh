#!/usr/bin/env bash
# ferry-nbd runs quick pipelined requests in the reading thread (nbd-server/serve.c): a
# client that sends many writes at once gets every reply right (an invalid write among them
# refused, the others written) and the replies leave together (the debug log); so do small
# reads of cached bytes, simple and structured, with the file's bytes; a write into a
# clone's cold region (a partial one: filled from a slow source first) is not run that way,
# so writes sent after it are answered first.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires nbdkit
PY=/usr/bin/python3

# 1. A plain export: 48 writes of 1 KiB, one past the end, a FUA write and a flush, in one send.
head -c 1M /dev/urandom >"$T/plain"
cp "$T/plain" "$T/plain.want"
FERRY_DEBUG=nbd start_ferry_nbd "$T/p.sock" "$T/plain"
$PY - "$T/p.sock" "$T/plain.want" <<'EOF' || fail "see above"
import os, struct, sys
sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import REQ_MAGIC, RawClient
WRITE, FLUSH, FUA = 1, 3, 1
sock, want_path = sys.argv[1:]
want = bytearray(open(want_path, "rb").read())
r = RawClient(sock)
r.go(b"")
stream, expect = b"", {}
for i in range(48):
    off, data = (i * 7 % 64) * 16384, bytes([i + 1]) * 1024
    flags = FUA if i == 20 else 0
    stream += struct.pack(">IHHQQI", REQ_MAGIC, flags, WRITE, i, off, len(data)) + data
    want[off:off + len(data)] = data
    expect[i] = 0
    if i == 30:  # past the end: refused (ENOSPC), nothing written
        stream += struct.pack(">IHHQQI", REQ_MAGIC, 0, WRITE, 100, len(want), 1024) + data
        expect[100] = 28
stream += struct.pack(">IHHQQI", REQ_MAGIC, 0, FLUSH, 101, 0, 0)
expect[101] = 0
r.s.sendall(stream)
got = {}
while len(got) < len(expect):
    err, handle = r.simple()
    if handle in got or handle not in expect:
        sys.exit("FAIL: unexpected reply for handle %d" % handle)
    got[handle] = err
if got != expect:
    sys.exit("FAIL: replies %r, expected %r" % (got, expect))
r.close()
open(want_path, "wb").write(want)
print("ok: 50 replies right")
EOF
same_bytes "$T/plain" "$T/plain.want"
grep -Eq "replies in one send" "$T/ferry-nbd.log" \
  || { cat "$T/ferry-nbd.log" >&2; fail "no write replies were sent together"; }
n=$(grep -Eo "[0-9]+ replies in one send" "$T/ferry-nbd.log" | sort -n | tail -1)
echo "most write replies in one send: $n"

# Then 40 reads of 512 B-16 KiB in one send, on a simple and on a structured connection
# (its data chunks): the file's bytes, in replies sent together.
before=$(wc -l <"$T/ferry-nbd.log")
$PY - "$T/p.sock" "$T/plain" <<'EOF' || fail "see above"
import os, random, struct, sys
sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import REQ_MAGIC, SIMPLE_MAGIC, CHUNK_MAGIC, RawClient
READ, OPT_STRUCTURED, REPLY_OFFSET_DATA, FLAG_DONE = 0, 8, 1, 1
sock, path = sys.argv[1:]
data = open(path, "rb").read()
rnd = random.Random(5)
for structured in (False, True):
    r = RawClient(sock)
    if structured:
        r.option(OPT_STRUCTURED)
        assert r.reply()[1] == 1, "structured replies refused"
    r.go(b"")
    reqs = {}
    for i in range(40):
        ln = rnd.choice((512, 4096, 16384))
        reqs[i] = (rnd.randrange(0, (len(data) - ln) // 512) * 512, ln)
    r.s.sendall(b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, READ, i, off, ln)
                         for i, (off, ln) in reqs.items()))
    for _ in range(40):
        magic = struct.unpack(">I", r.recv(4))[0]
        if magic == SIMPLE_MAGIC and not structured:
            err, handle = struct.unpack(">IQ", r.recv(12))
            body = r.recv(reqs[handle][1])
        elif magic == CHUNK_MAGIC and structured:
            flags, typ, handle, ln = struct.unpack(">HHQI", r.recv(16))
            if flags != FLAG_DONE or typ != REPLY_OFFSET_DATA or ln != reqs[handle][1] + 8:
                sys.exit("FAIL: chunk flags %d type %d length %d for a read of %d"
                         % (flags, typ, ln, reqs[handle][1]))
            off = struct.unpack(">Q", r.recv(8))[0]
            assert off == reqs[handle][0], "chunk offset %d" % off
            err, body = 0, r.recv(ln - 8)
        else:
            sys.exit("FAIL: reply magic 0x%x (structured %s)" % (magic, structured))
        off, ln = reqs.pop(handle)
        if err or body != data[off:off + ln]:
            sys.exit("FAIL: read of %d at %d: error %d or wrong bytes" % (ln, off, err))
    r.close()
    print("ok: 40 reads right, structured" if structured else "ok: 40 reads right, simple")
EOF
# Held reads need RWF_NOWAIT reads of the file (ext4, xfs, tmpfs have them); where the file
# system has none, reads go to the workers and only the bytes are checked.
if $PY -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)' "$T/plain" 2>/dev/null; then
  tail -n +$((before + 1)) "$T/ferry-nbd.log" | grep -Eq "replies in one send" \
    || { cat "$T/ferry-nbd.log" >&2; fail "no read replies were sent together"; }
else
  echo "this file system has no RWF_NOWAIT reads: read replies not checked for batching"
fi
stop_ferry_nbd

# 2. A clone whose source takes 2 s a read, the hydrator paused: region 0 read (hydrated),
# then in one send a partial write into cold region 10 (filled from the source first) and
# two writes into region 0.  Those two must be answered before the cold one: the reader
# must not run the cold write itself.
head -c 4M /dev/urandom >"$T/src"
truncate -s 4M "$T/dst"
start_nbdkit "$T/src.sock" --filter=delay file "$T/src" rdelay=2
start_ferry_nbd "$T/c.sock" --control "$T/ctl" --source "nbd+unix:///?socket=$T/src.sock" \
  --map "$T/map" --region-size 64K "$T/dst"
"$FERRY" pause "$T/ctl" >/dev/null
$PY - "$T/c.sock" "$T/src" <<'EOF' || fail "see above"
import os, struct, sys, time
sys.path.insert(0, os.environ["TESTS_DIR"])
from nbdtest import REQ_MAGIC, RawClient
READ, WRITE = 0, 1
sock, src_path = sys.argv[1:]
want = bytearray(open(src_path, "rb").read())
r = RawClient(sock)
r.go(b"")
r.request(READ, 0, 65536, handle=1)
err, handle = r.simple()
if err or handle != 1 or r.recv(65536) != want[:65536]:
    sys.exit("FAIL: the read of region 0 (err %d)" % err)
writes = [(10, 10 * 65536 + 4096), (11, 0), (12, 8192)]
stream = b""
for handle, off in writes:
    data = bytes([handle]) * 4096
    stream += struct.pack(">IHHQQI", REQ_MAGIC, 0, WRITE, handle, off, len(data)) + data
    want[off:off + len(data)] = data
t0 = time.monotonic()
r.s.sendall(stream)
order = []
for _ in writes:
    err, handle = r.simple()
    if err:
        sys.exit("FAIL: write %d failed with %d" % (handle, err))
    order.append((handle, round(time.monotonic() - t0, 2)))
print("reply order (handle, seconds):", order)
if order[-1][0] != 10:
    sys.exit("FAIL: the writes into region 0 waited for the cold one (the reader kept the "
             "read lock while it slept on the source)")
for off in (0, 10 * 65536):
    r.request(READ, off, 65536, handle=2)
    err, handle = r.simple()
    if err or r.recv(65536) != want[off:off + 65536]:
        sys.exit("FAIL: region at %d reads back wrong" % off)
r.close()
print("ok: cold write answered last, bytes right")
EOF
stop_ferry_nbd
echo "ok"
