#!/usr/bin/env bash
# ferry-nbd's zero-copy read replies (nbd-server/splice.c): reads of 128 KiB..1 MiB of a plain
# file, and of a converged clone's destination, go through splice (strace counts the calls)
# and give the file's bytes, in simple and structured replies, at odd offsets and with many
# requests in flight; larger reads and small ones are buffered.  A file that shrank under the
# server (splice finds its end early) gets the buffered reply's error (EIO), and the connection
# goes on answering the right bytes: nothing of the failed reply was left in the pipe.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires strace nbdcopy
PY=/usr/bin/python3
$PY -c 'import nbd' 2>/dev/null || skip "python3-libnbd missing"

head -c 6M /dev/urandom >"$T/img"
truncate -s 8M "$T/img" # a hole at the end
cp "$T/img" "$T/orig"

splices() { grep -c 'splice(' "$TRACE" || true; }

# reads.py URI STRUCTURED: reads of many sizes at many offsets, each compared with the file.
cat >"$T/reads.py" <<'EOF'
import random, sys, nbd
uri, structured, path = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
align = int(sys.argv[4]) if len(sys.argv) > 4 else 512
data = open(path, "rb").read()
h = nbd.NBD()
h.set_request_structured_replies(structured)
h.connect_uri(uri)
assert h.get_structured_replies_negotiated() == structured
rnd = random.Random(7)
sizes = [4096, 65536, 131072, 131072 + align, 524288, 1 << 20, (1 << 20) + 4096, 4 << 20]
n = 0
for size in sizes:
    for _ in range(6):
        off = rnd.randrange(0, len(data) - size + 1) & ~(align - 1)
        got = h.pread(size, off)
        if got != data[off:off + size]:
            sys.exit("read of %d bytes at %d differs from the file" % (size, off))
        n += 1
# The last MiB: the file's hole.
if h.pread(1 << 20, len(data) - (1 << 20)) != data[-(1 << 20):]:
    sys.exit("the hole at the end reads wrong")
print("ok %d reads" % (n + 1))
EOF

for structured in 1 0; do
  start_traced splice "$T/sock" "$T/img"
  $PY "$T/reads.py" "nbd+unix:///?socket=$T/sock" "$structured" "$T/img" || fail "reads differ (structured=$structured)"
  nbdcopy --request-size=1048576 --requests=16 "nbd+unix:///?socket=$T/sock" "$T/copy"
  same_bytes "$T/img" "$T/copy"
  stop_traced
  s=$(splices)
  [ "$s" -gt 0 ] || fail "no splice call for 128 KiB..1 MiB reads (structured=$structured)"
  echo "ok: plain file, structured=$structured: bytes equal, $s splice calls"
done

# --direct: files opened O_DIRECT are read into buffers, never spliced (the export's
# block size is then 4 KiB).
start_traced splice "$T/sock" --direct "$T/img"
$PY "$T/reads.py" "nbd+unix:///?socket=$T/sock" 1 "$T/img" 4096 >/dev/null || fail "--direct reads differ"
stop_traced
[ "$(splices)" = 0 ] || fail "an O_DIRECT file was spliced"
echo "ok: --direct: buffered replies"

# The file shrinks under the server: the read past its new end fails with the buffered
# path's error, and later replies on the same connection are right.
start_traced splice "$T/sock" "$T/img"
cat >"$T/shrink.py" <<'EOF'
import os, sys, nbd
uri, path = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
h = nbd.NBD()
h.set_request_structured_replies(False)  # simple replies: no hole lookup before the read
h.connect_uri(uri)
assert h.pread(1 << 20, 1 << 20) == data[1 << 20:2 << 20]
os.truncate(path, 2 << 20)
try:
    h.pread(1 << 20, 3 << 19)  # half of it left: splice gets that much, then the end
    sys.exit("a read past the shrunk file's end succeeded")
except nbd.Error as e:
    print("refused:", e.string)
for size, off in ((131072, 655360), (131072, 0), (262144, 1 << 20), (1 << 20, 0)) * 4:
    if h.pread(size, off) != data[off:off + size]:
        sys.exit("after the failed read, the read of %d bytes at %d differs" % (size, off))
print("ok")
EOF
out=$($PY "$T/shrink.py" "nbd+unix:///?socket=$T/sock" "$T/img") || fail "shrunk file: $out"
echo "$out" | grep -q "^refused: .*Input/output error" || fail "unexpected error: $out"
stop_traced
echo "ok: a file that shrank: $(echo "$out" | head -1)"

# A clone: once converged its reads come from the destination file, spliced.
truncate -s 8M "$T/dest"
start_traced splice "$T/sock" --control "$T/ctl" --source "$T/orig" --map "$T/map" "$T/dest"
"$FERRY" wait --timeout 60 "$T/ctl" | grep -q converged || fail "the clone did not converge"
$PY "$T/reads.py" "nbd+unix:///?socket=$T/sock" 1 "$T/orig" >/dev/null || fail "the converged clone's reads differ"
stop_traced
[ "$(splices)" -gt 0 ] || fail "the converged clone's reads were not spliced"
same_bytes "$T/orig" "$T/dest"
echo "ok: converged clone: bytes equal, spliced"
