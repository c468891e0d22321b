#!/usr/bin/env bash
# ferry-fuse's FUSE worker loop (fuse-mount/devloop.c): at queue depth 1 one thread reads
# /dev/fuse and answers the request itself (solo mode).  When that thread goes to sleep on
# the volume (a cold fetch from a slow source), another thread must take the device, so a
# read of a hydrated region is answered while the cold fetch is still outstanding.  Then a
# burst of concurrent reads turns the loop back to concurrent mode; the bytes stay right.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"
requires nbdkit dd

MNT="$T/mnt"
src="$T/src.img" dst="$T/dst.img" map="$T/map" ctl="$T/ctl.sock"
head -c $((8 << 20)) /dev/urandom >"$src"
truncate -s "$(stat -c %s "$src")" "$dst"
# Every read from the source takes 3 s.
start_nbdkit "$T/src.sock" --filter=delay file "$src" rdelay=3
FERRY_DEBUG=devloop fuse_start "$MNT" --control "$ctl" --source "nbd+unix:///?socket=$T/src.sock" \
  --map "$map" --region-size 64K "$dst"
"$FERRY" pause "$ctl" >/dev/null

# One process, one O_DIRECT descriptor (no open or release requests in between): region 0
# fetched once (3 s), then read 300 times one at a time (solo mode); then a cold read of a
# region (3 s at the source) in a thread, and meanwhile a read of region 0, which must be
# answered while the cold one is still outstanding.  On a loaded machine a late worker can
# make the loop see overlap and leave solo mode before the cold read: each attempt reads until
# the log says solo mode is on, then starts a new cold region; up to 12 attempts, until the
# log shows the solo reader handing over.
/usr/bin/python3 - "$MNT/disk" "$src" "$FUSE_ERR" <<'PY' || fail "see above"
import mmap, os, sys, threading, time
disk, src, log = sys.argv[1:]
fd = os.open(disk, os.O_RDONLY | os.O_DIRECT)
def pread(n, off):
    buf = mmap.mmap(-1, n)  # page-aligned, as O_DIRECT wants
    assert os.preadv(fd, [buf], off) == n
    return bytes(buf)
want = open(src, "rb").read()
assert pread(65536, 0) == want[:65536], "region 0 read through the clone differs"
def solo_now():
    modes = [l for l in open(log).read().splitlines() if "devloop: solo mode after" in l
             or "devloop: concurrent mode after" in l]
    return bool(modes) and "solo mode after" in modes[-1]
for attempt in range(12):
    # Reads one at a time until the log says solo mode is on (a loaded machine breaks it off
    # and the loop asks for longer quiet runs each time, up to 4096: read up to 3 times that).
    for i in range(12288):
        assert pread(4096, (i % 16) * 4096) == want[(i % 16) * 4096:(i % 16 + 1) * 4096]
        if i % 32 == 31 and solo_now():
            break
    got = {}
    off = (64 + attempt) << 16
    def cold():
        got["b"] = pread(65536, off)
        got["done"] = True
    t = threading.Thread(target=cold)
    t.start()
    time.sleep(0.5)
    if "done" in got:
        sys.exit("FAIL: the cold read finished before the source's delay")
    assert pread(65536, 0) == want[:65536], "region 0 read again differs"
    if "done" in got:
        sys.exit("FAIL: the read of a hydrated region waited for the cold fetch "
                 "(the solo reader kept /dev/fuse while it slept)")
    t.join()
    assert got["b"] == want[off:off + 65536], "the cold region differs"
    if "the solo reader sleeps on the volume" in open(log).read():
        print("hand-over seen in attempt %d" % (attempt + 1))
        break
PY
grep -q "solo mode after" "$FUSE_ERR" || { cat "$FUSE_ERR" >&2; fail "reads one at a time did not turn solo mode on"; }
grep -q "the solo reader sleeps on the volume" "$FUSE_ERR" || { cat "$FUSE_ERR" >&2; fail "no hand-over logged"; }

# Four readers at once over what is hydrated: concurrent mode again, the bytes right.
for j in 1 2 3 4; do
  (for i in $(seq 0 30); do
    dd if="$MNT/disk" of="$T/c$j" bs=4K skip=$(((i * j) % 16)) count=1 iflag=direct status=none
    cmp "$T/c$j" <(tail -c +$((((i * j) % 16) * 4096 + 1)) "$src" | head -c 4096) || exit 1
  done) &
  readers+=($!)
done
for p in "${readers[@]}"; do wait "$p" || fail "a concurrent reader read wrong bytes"; done
grep -q "concurrent mode after" "$FUSE_ERR" || fail "concurrent readers did not end solo mode"
fuse_stop "$MNT"
grep -o "devloop: .*" "$FUSE_ERR" | sort | uniq -c # the mode changes, for the log
echo "ok"
