#!/usr/bin/env bash
# No double reads (issue 13, item 5): a guest reading the whole clone while it hydrates makes
# the source serve its data once.  The source is nbdkit with the log filter (every read it
# served, exactly) and a small delay; the reader goes through the clone sequentially, which
# is what the hydrator's "near recent on-demand reads" hints race with hardest.  Also: the
# clone's counters tell the truth (bytes_copied + bytes_fetched = what the source served;
# bytes_skipped only regions marked without a transfer).  And a read of several cold regions
# is one source request: the run of cold regions it covers, split where a region is already
# hydrated; the source's block status is asked once, at open, for the whole volume.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires nbdkit

size=$((32 << 20))
head -c $((24 << 20)) /dev/urandom >"$T/src"
truncate -s $size "$T/src" # the last 8 MiB are a hole: zero extents, never read
truncate -s $size "$T/dst"
start_nbdkit "$T/src.sock" --filter=log --filter=delay file "$T/src" logfile="$T/src.log" \
  rdelay=3ms
start_ferry_nbd "$T/clone.sock" --control "$T/ctl" --rate 8M \
  --source "nbd+unix:///?socket=$T/src.sock" --map "$T/map" "$T/dst"

# One connection: structured replies, as a guest's NBD client (qemu) reads, so the clone's
# hole lookup answers the 8 MiB hole (our driver's extra connections ask for simple replies,
# backends/nbd.c, and a simple read of a hole fetches its zeroes).
"$VOLTOOL" cat -c 1 -t 1 -r 256K "$NBD_URI" >"$T/read"
same_bytes "$T/src" "$T/read"
"$FERRY" wait --timeout 120 "$T/ctl" >/dev/null || fail "not converged"
"$FERRY" status --json "$T/ctl" >"$T/status.json"
stop_ferry_nbd
same_bytes "$T/src" "$T/dst"

served=$(/usr/bin/python3 - "$T/src.log" <<'PY'
import re, sys
total = 0
for line in open(sys.argv[1]):
    m = re.search(r"\bRead id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)", line)
    if m:
        total += int(m.group(2), 16)
print(total)
PY
)
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$T/status.json" "$1"; }
copied=$(field bytes_copied) fetched=$(field bytes_fetched) skipped=$(field bytes_skipped)
data=$((24 << 20))
echo "source served $served bytes for $data of data (copied $copied, fetched $fetched, skipped $skipped)"
# A region crosses the link once; a few may race (an on-demand fetch starting in the instant
# the hydrator looked): at most 4 regions of slack.
[ "$served" -le $((data + 4 * 65536)) ] || fail "the source served $served bytes for $data of data"
[ $((copied + fetched)) -eq "$served" ] || fail "copied + fetched ($((copied + fetched))) != served ($served)"
[ "$skipped" -eq $((8 << 20)) ] || fail "skipped $skipped, expected the 8 MiB hole"
[ $((copied + fetched + skipped)) -le $((size + 4 * 65536)) ] || fail "the totals exceed the volume"
echo "no double reads"

# One request per run of cold regions (a paused clone: no hydrator, every read is on demand).
truncate -s $size "$T/dst2"
start_nbdkit "$T/src2.sock" --filter=log file "$T/src" logfile="$T/src2.log"
start_ferry_nbd "$T/clone2.sock" --paused --source "nbd+unix:///?socket=$T/src2.sock" \
  --map "$T/map2" "$T/dst2"
# The source's block status is learned once, for the whole volume, as the clone opens (not by
# the first read of each window): one request, before any read, and none after the reads.
for ((i = 0; i < 100; i++)); do
  grep -q 'Extents id=' "$T/src2.log" && break
  sleep 0.05
done
grep -q 'Extents id=[0-9]* offset=0x0 count=0x2000000 ' "$T/src2.log" ||
  fail "no block status of the whole volume at open: $(grep Extents "$T/src2.log")"
/usr/bin/python3 - "$NBD_URI" "$T/src" <<'PY' || fail "reads through the paused clone differ"
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
data = open(sys.argv[2], "rb").read()
M, K = 1 << 20, 1 << 10
for off, n in ((2 * M + 128 * K, 64 * K), (2 * M, M), (4 * M + 32 * K, 200 * K)):
    assert h.pread(n, off) == data[off:off + n], (off, n)
PY
reads=$(grep -o 'Read id=[0-9]* offset=0x[0-9a-f]* count=0x[0-9a-f]*' "$T/src2.log" | sed 's/ id=[0-9]*//' | tr '\n' ' ')
# 64 KiB regions: region 34 alone; then 32-33 and 35-47 (34 is hydrated); then 64-67 for the
# unaligned 200 KiB at 4 MiB + 32 KiB.
expect="Read offset=0x220000 count=0x10000 Read offset=0x200000 count=0x20000 Read offset=0x230000 count=0xd0000 Read offset=0x400000 count=0x40000 "
[ "$reads" = "$expect" ] || fail "source reads: '$reads', expected '$expect'"
n=$(grep -c 'connection=[0-9]* Extents id=' "$T/src2.log")
[ "$n" -eq 1 ] || fail "$n block status requests, expected the one at open: $(grep Extents "$T/src2.log")"
stop_ferry_nbd
echo "ok: cold runs fetched in one request each: $reads"
