#!/usr/bin/env bash
# ferry-nbd's spin for the next request (--poll-us, nbd-server/serve.c): requests sent back to
# back, with gaps longer than the window (the spin runs out and turns off) and back to back
# again (it turns on) all get the file's bytes, and writes land; the spin is live (strace sees
# its non-blocking reads) and --poll-us 0 turns it off (none); a connected client that goes
# idle does not keep the server spinning (CPU time over 2 idle seconds).
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires strace
PY=/usr/bin/python3
$PY -c 'import nbd' 2>/dev/null || skip "python3-libnbd missing"

head -c 4M /dev/urandom >"$T/img"
cp "$T/img" "$T/orig"

# client URI: reads in three phases (back to back, 3 ms apart, back to back), each checked
# against $T/orig, then 64 writes of known bytes; prints "ok N".
client() {
  $PY - "$1" "$T/orig" <<'EOF'
import nbd, random, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
orig = bytearray(open(sys.argv[2], "rb").read())
rnd = random.Random(7)
n = 0
for phase, count, gap in (("burst", 300, 0), ("gaps", 15, 0.003), ("burst again", 300, 0)):
    for _ in range(count):
        ln = rnd.choice((512, 4096, 65536))
        off = rnd.randrange(0, len(orig) - ln)
        if h.pread(ln, off) != bytes(orig[off:off + ln]):
            sys.exit("%s: read of %d at %d differs from the file" % (phase, ln, off))
        n += 1
        if gap:
            time.sleep(gap)
for i in range(64):
    off = rnd.randrange(0, len(orig) - 4096)
    buf = bytes([i]) * 4096
    h.pwrite(buf, off)
    orig[off:off + 4096] = buf
    n += 1
h.flush()
open(sys.argv[2] + ".want", "wb").write(orig)
h.shutdown()
print("ok", n)
EOF
}

# 1. Default window: bytes right through the spin's on/off transitions.
start_ferry_nbd "$T/s0" "$T/img"
out=$(client "$NBD_URI") || fail "client: $out"
[ "$out" = "ok 679" ] || fail "client printed '$out'"
stop_ferry_nbd
same_bytes "$T/img" "$T/orig.want"
cp "$T/orig.want" "$T/orig"

# 2. The spin is live: non-blocking receives (MSG_DONTWAIT) with --poll-us 1000, none with 0.
traced() { # traced NAME ARGS...: run the client against ferry-nbd under strace
  local name=$1; shift
  start_traced recvfrom "$T/$name.sock" "$@" "$T/img"
  out=$(client "nbd+unix:///?socket=$T/$name.sock") || fail "$name: client: $out"
  [ "$out" = "ok 679" ] || fail "$name: client printed '$out'"
  cp "$T/orig.want" "$T/orig"
  stop_traced
  same_bytes "$T/img" "$T/orig"
}
traced spin --poll-us 1000
spins=$(grep -c 'MSG_DONTWAIT' "$TRACE" || true)
[ "$spins" -gt 0 ] || fail "--poll-us 1000: no non-blocking receive in the trace (the spin never ran)"
traced nospin --poll-us 0
nospins=$(grep -c 'MSG_DONTWAIT' "$TRACE" || true)
[ "$nospins" -eq 0 ] || fail "--poll-us 0: $nospins non-blocking receives (the spin ran)"
echo "ok: $spins non-blocking receives with --poll-us 1000, none with --poll-us 0"

# 3. A connected client that goes idle: the spin turns off (a server spinning for the idle
# client would burn the 2 s; allow a quarter of that for everything else).
start_ferry_nbd "$T/s3" --poll-us 1000 "$T/img"
cpu() { awk '{ print $14 + $15 }' "/proc/$NBD_PID/stat"; }
mkfifo "$T/go"
$PY - "$NBD_URI" "$T/go" "$T/burst" <<'EOF' &
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(200):
    h.pread(4096, i * 4096)
open(sys.argv[3], "w").write("done\n")
open(sys.argv[2]).read()  # idle, connected, until the test is done measuring
h.shutdown()
EOF
cpid=$!
track_pid "$cpid"
wait_for_file "$T/burst"
sleep 0.2 # the server's last spin (1 ms) is over
c0=$(cpu)
sleep 2
c1=$(cpu)
echo done >"$T/go"
wait "$cpid" || fail "idle client failed"
ticks=$((c1 - c0))
hz=$(getconf CLK_TCK)
echo "idle: $ticks ticks of CPU in 2 s (CLK_TCK $hz)"
[ "$ticks" -le $((hz / 2)) ] || fail "ferry-nbd used $ticks/$hz s of CPU in 2 idle seconds: it kept spinning"
stop_ferry_nbd
echo "PASS"
