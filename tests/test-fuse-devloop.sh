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

# Region 0 fetched once (3 s), then served from the destination.
dd if="$MNT/disk" of="$T/a0" bs=64K count=1 iflag=direct status=none
cmp "$T/a0" <(head -c 65536 "$src") || fail "region 0 read through the clone differs"
for i in $(seq 0 39); do
  dd if="$MNT/disk" of="$T/a" bs=4K skip=$((i % 16)) count=1 iflag=direct status=none
done
grep -q "solo mode after" "$FUSE_ERR" || { cat "$FUSE_ERR" >&2; fail "40 reads one at a time did not turn solo mode on"; }

# A cold read of region 64 (3 s at the source), and meanwhile a read of region 0.
(dd if="$MNT/disk" of="$T/b" bs=64K skip=64 count=1 iflag=direct status=none && touch "$T/b.done") &
bpid=$!
sleep 0.5
[ ! -e "$T/b.done" ] || fail "the cold read finished before the source's delay"
dd if="$MNT/disk" of="$T/a1" bs=64K count=1 iflag=direct status=none
[ ! -e "$T/b.done" ] || fail "the read of a hydrated region waited for the cold fetch (the solo reader kept /dev/fuse while it slept)"
grep -q "the solo reader sleeps on the volume" "$FUSE_ERR" || fail "no hand-over logged"
wait "$bpid" || fail "the cold read failed"
cmp "$T/a1" "$T/a0" || fail "region 0 read again differs"
cmp "$T/b" <(tail -c +$((4194304 + 1)) "$src" | head -c 65536) || fail "region 64 differs"

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
echo "ok"
