#!/usr/bin/env bash
# No double reads (issue 13, item 5): a guest reading the whole clone while it hydrates makes
# the source serve its data once.  The source is nbdkit with the log filter (every read it
# served, exactly) and a small delay; the reader goes through the clone sequentially, which
# is what the hydrator's "near recent on-demand reads" hints race with hardest.  Also: the
# clone's counters tell the truth (bytes_copied + bytes_fetched = what the source served;
# bytes_skipped only regions marked without a transfer).
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

"$VOLTOOL" cat -t 1 -r 256K "$NBD_URI" >"$T/read"
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
