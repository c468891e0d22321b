#!/usr/bin/env bash
# The link stays down past --source-timeout (issue 13, item 7): reads of regions still on the
# source fail with EIO after about that long, with a message; reads of hydrated regions go on;
# nothing wrong is ever served; `ferry status` says reconnecting, with the reason; when the
# link returns the clone carries on by itself and converges to the source.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-tls.sh"
. "$TESTS_DIR/lib-netns.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"
netns_setup 200mbit
make_tls

head -c 32M /dev/urandom >"$T/src"
truncate -s 32M "$T/dst"
net_source "$T/src"
# Paused: nothing is hydrated but what the reads below fetch.
net_clone "$T/dst" --source-timeout 3 --paused
"$VOLTOOL" read "$CLONE_URI" 0 1048576 >"$T/first"
cmp "$T/first" <(head -c 1048576 "$T/src") || fail "first MiB differs"

link_down
echo "link down"
t0=$(date +%s.%N)
rc=0
"$VOLTOOL" read "$CLONE_URI" 16777216 65536 >"$T/lost" 2>"$T/lost.err" || rc=$?
t1=$(date +%s.%N)
cat "$T/lost.err"
[ $rc -ne 0 ] || fail "a read of an unhydrated region succeeded with the link down"
[ ! -s "$T/lost" ] || fail "bytes were served for a failed read"
grep -q "Input/output error" "$T/lost.err" || fail "not EIO: $(cat "$T/lost.err")"
# Printed, not asserted (no timing assertions): about 3 s for the read, plus up to 3 s when
# the server first asked the lost source for holes (see clone_extents).
/usr/bin/python3 -c "print('EIO after %.1f s (--source-timeout 3)' % ($t1 - $t0))"
grep "source read of 65536 bytes at 16777216 failed" "$T/clone.log" ||
  fail "no message naming the read: $(cat "$T/clone.log")"
# Why: the request's deadline, or the source's silence watchdog (the same 3 s) first.
grep -qE "source read of 65536 bytes at 16777216 failed \(.* --source-timeout 3\): .*(deadline|stopped answering)" "$T/clone.log" ||
  fail "the message does not say why"
# Hydrated regions are still served, from the destination.
"$VOLTOOL" read "$CLONE_URI" 4096 8192 >"$T/hyd"
cmp "$T/hyd" <(head -c 12288 "$T/src" | tail -c 8192) || fail "hydrated region differs"
# The hydrator resumed with the link down: it waits for the source; status says why.
"$FERRY" resume "$T/clone.ctl" >/dev/null
for ((i = 0; i < 400; i++)); do
  [ "$(clone_status state)" = reconnecting ] && break
  sleep 0.05
done
"$FERRY" status "$T/clone.ctl" | tee "$T/status"
grep -q "state: *reconnecting" "$T/status" || fail "status does not say reconnecting"
grep -q "last error:.*lost.*reconnecting" "$T/status" || fail "status lacks the reason"

link_up
echo "link up"
"$FERRY" wait --timeout 120 "$T/clone.ctl" || { cat "$T/clone.log"; fail "no convergence after the link came back"; }
"$VOLTOOL" cat "$CLONE_URI" >"$T/all"
same_bytes "$T/src" "$T/all"
kill -TERM "$CLONE_PID"
wait "$CLONE_PID" || fail "clone server exit status $?"
same_bytes "$T/src" "$T/dst"
echo "past --source-timeout: EIO with a message, nothing wrong served, resumed by itself"
