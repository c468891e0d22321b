#!/usr/bin/env bash
# The nbd driver reconnects (issue 13, item 3): a server killed in the middle of a parallel
# read and restarted a second later — the requests that were in flight are sent again on
# the new connections and the bytes are right; a reconnection while a write was acknowledged
# but not flushed makes the flush fail (the old server may have lost it); a server that comes
# back with another size is not reconnected to.
. "$TESTS_DIR/functions.sh"
requires nbdkit

head -c 32M /dev/urandom >"$T/src"
sock=$T/s.sock
uri="nbd+unix:///?socket=$sock"
start_nbdkit "$sock" --filter=delay file "$T/src" rdelay=20ms
"$VOLTOOL" cat -t 8 -r 64K "$uri" >"$T/out" 2>"$T/cat.err" &
cat_pid=$!
sleep 0.5 # reads in flight on every connection
kill -9 "$NBDKIT_PID"
wait "$NBDKIT_PID" 2>/dev/null || true
rm -f "$sock"
sleep 1
start_nbdkit "$sock" --filter=delay file "$T/src" rdelay=20ms
wait "$cat_pid" || { cat "$T/cat.err"; fail "the read did not survive the restart"; }
cat "$T/cat.err"
same_bytes "$T/src" "$T/out"
grep -q "lost: .*; reconnecting" "$T/cat.err" || fail "no reconnection logged"
grep -q "back after" "$T/cat.err" || fail "no reconnection logged"
kill "$NBDKIT_PID"
wait "$NBDKIT_PID" 2>/dev/null || true
rm -f "$sock"

# A write acknowledged, the server restarted (nbdkit memory: the write is gone), then flush.
start_nbdkit "$sock" memory size=1M
head -c 4096 /dev/urandom >"$T/block"
VOLTOOL_FLUSH_AFTER=$T/go "$VOLTOOL" write "$uri" 0 <"$T/block" 2>"$T/w.err" &
w_pid=$!
sleep 0.5
kill -9 "$NBDKIT_PID"
wait "$NBDKIT_PID" 2>/dev/null || true
rm -f "$sock"
start_nbdkit "$sock" memory size=1M
for ((i = 0; i < 200; i++)); do grep -q "back after" "$T/w.err" && break; sleep 0.05; done
touch "$T/go"
rc=0
wait "$w_pid" || rc=$?
cat "$T/w.err"
[ $rc -ne 0 ] || fail "the flush after a lost unflushed write succeeded"
grep -q "flush: the connection to the NBD server was lost while writes were not yet flushed" "$T/w.err" ||
  fail "flush message: $(cat "$T/w.err")"
kill "$NBDKIT_PID"
wait "$NBDKIT_PID" 2>/dev/null || true
rm -f "$sock"

# Back with another size: another disk, not reconnected to.
start_nbdkit "$sock" --filter=delay memory size=1M rdelay=10ms
"$VOLTOOL" --reconnect-wait 5 cat -t 1 -r 4K "$uri" >"$T/o2" 2>"$T/c2.err" &
c_pid=$!
sleep 0.2
kill -9 "$NBDKIT_PID"
wait "$NBDKIT_PID" 2>/dev/null || true
rm -f "$sock"
start_nbdkit "$sock" memory size=2M
rc=0
wait "$c_pid" || rc=$?
[ $rc -ne 0 ] || fail "read from a server that changed size"
grep -q "the export now has 2097152 bytes instead of 1048576: not the same disk" "$T/c2.err" ||
  fail "size change: $(cat "$T/c2.err")"
echo "nbd driver reconnects"
