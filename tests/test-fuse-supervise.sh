#!/usr/bin/env bash
# ferry-fuse --supervise: the server is killed (kill -9) three times while a writer and reader
# works on the disk through one open descriptor (O_DIRECT, fsyncs); it sees no error, every
# read returns what it last wrote or the source's bytes, and the destination holds exactly
# that after convergence.  Without --supervise the same kill ends the mount: the open
# descriptor's next read fails with ENOTCONN.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"
requires nbdkit

MNT=$T/mnt
src=$T/src.img dst=$T/dst.img map=$T/map ctl=$T/ctl
head -c $((16 << 20)) /dev/urandom >"$src"
truncate -s "$(stat -c %s "$src")" "$dst"
# A slow source: every read waits 10 ms, so the kills land among fetches in flight.
start_nbdkit "$T/src.sock" -r --filter=delay file "$src" rdelay=10ms
uri="nbd+unix:///?socket=$T/src.sock"

server_pid() {
  "$FERRY" status --json "$ctl" 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null
}

# --- without --supervise: what a reader sees when the server dies.
truncate -s "$(stat -c %s "$src")" "$T/plain.img"
fuse_start "$MNT" --control "$ctl" --rate 1M --source "$uri" --map "$T/plain.map" "$T/plain.img"
/usr/bin/python3 - "$MNT/disk" "$FUSE_PID" >"$T/plain.out" 2>&1 <<'PY' || { cat "$T/plain.out"; fail "unsupervised reader"; }
import os, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
os.pread(fd, 4096, 0)
os.kill(int(sys.argv[2]), signal.SIGKILL)
time.sleep(0.3)
try:
    os.pread(fd, 4096, 1 << 20)
    print("read succeeded after the kill")
    sys.exit(1)
except OSError as e:
    print("after kill -9 without --supervise: %s" % e)
PY
cat "$T/plain.out"
grep -qF "[Errno 107] Transport endpoint is not connected" "$T/plain.out" || fail "expected ENOTCONN"
fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
wait "$FUSE_PID" 2>/dev/null || true
rm -f "$ctl"

# --- with --supervise.
fuse_start "$MNT" --supervise --control "$ctl" --rate 1M --source "$uri" --map "$map" "$dst"
supervisor=$FUSE_PID
first=$(server_pid)
[ -n "$first" ] && [ "$first" != "$supervisor" ] || fail "status names pid '$first', the supervisor is $supervisor"

# The worker: random aligned writes (fsynced every few) and reads checked against a model of
# what the disk must hold; runs until $T/stop exists, then checks the whole disk.
/usr/bin/python3 - "$MNT/disk" "$src" "$T/stop" "$T/expect" >"$T/worker.out" 2>&1 <<'PY' &
import mmap, os, random, sys, time
disk, src, stop, expect = sys.argv[1:5]
model = bytearray(open(src, "rb").read())
size = len(model)
fd = os.open(disk, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)
rnd = random.Random(12)
ops = writes = 0
def check(off, n):
    got = os.preadv(fd, [memoryview(buf)[:n]], off)
    if got != n or buf[:n] != model[off:off + n]:
        print("MISMATCH at %d+%d (op %d)" % (off, n, ops)); sys.exit(1)
while not os.path.exists(stop) or ops < 50:
    ops += 1
    n = rnd.choice([4096, 8192, 65536, 131072, 262144])
    off = rnd.randrange(0, (size - n) // 4096) * 4096
    if rnd.random() < 0.4:
        data = os.urandom(n)
        buf[:n] = data
        if os.pwritev(fd, [memoryview(buf)[:n]], off) != n:
            print("short write"); sys.exit(1)
        model[off:off + n] = data
        writes += 1
        if writes % 4 == 0:
            os.fsync(fd)
    else:
        check(off, n)
os.fsync(fd)
for off in range(0, size, 1 << 20):
    check(off, min(1 << 20, size - off))
open(expect, "wb").write(model)
print("worker: %d operations, %d writes, no error" % (ops, writes))
PY
worker=$!
track_pid $worker
pids=$first
for k in 1 2 3; do
  sleep 0.4
  victim=$(server_pid)
  kill -9 "$victim"
  for ((i = 0; i < 200; i++)); do
    p=$(server_pid || true)
    [ -n "$p" ] && [ "$p" != "$victim" ] && break
    sleep 0.05
  done
  [ -n "$p" ] && [ "$p" != "$victim" ] || fail "no new server after killing $victim"
  echo "kill -9 $victim: server $p took over"
  pids="$pids $p"
done
: >"$T/stop"
wait "$worker" || { cat "$T/worker.out"; fail "the worker saw an error"; }
cat "$T/worker.out"
kill -0 "$supervisor" || fail "the supervisor died"
[ "$(echo "$pids" | tr ' ' '\n' | sort -u | wc -l)" = 4 ] || fail "expected 4 distinct servers: $pids"

"$FERRY" set-rate "$ctl" 0 >/dev/null
"$FERRY" wait --timeout 120 "$ctl" >/dev/null || fail "the clone did not converge"
fuse_stop "$MNT"
cmp "$dst" "$T/expect" || fail "the destination differs from what the worker wrote"
fuse_check_sanitizer_logs
echo "ok: 3 kills of the server under I/O, no error, destination = writes over the source"
