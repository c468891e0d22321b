#!/usr/bin/env bash
# Issue 13, acceptance: a clone over TLS on the two-host link (20 ms RTT, 200 Mbit/s)
# survives two 5 s link outages and a restart of its source with no client-visible error,
# and ends byte-identical to the source.  Meanwhile a guest-like reader reads random ranges
# through the clone (most of them not yet hydrated: fetched on demand across the link) and
# checks every byte; `ferry status` says "reconnecting", with the reason, while the source
# is down, and the clone recovers by itself when it is back.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-tls.sh"
. "$TESTS_DIR/lib-netns.sh"
requires nbdinfo
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"
netns_setup 200mbit
make_tls

head -c 128M /dev/urandom >"$T/src"
truncate -s 128M "$T/dst"
net_source "$T/src"
# 4 MB/s of hydration: about 30 s of copying, long enough for every event below.
net_clone "$T/dst" --rate 4M
/usr/bin/python3 "$TESTS_DIR/nbd_reader.py" "$CLONE_URI" "$T/src" "$T/stop-reader" 0.05 \
  >"$T/reader.log" 2>&1 &
reader=$!
track_pid $reader

outage() {
  not_converged "outage $1"
  link_down
  echo "link down ($1)"
  sleep 5
  link_up
  echo "link up ($1): $(clone_status regions_hydrated) regions hydrated"
}
sleep 1
outage 1
sleep 2
outage 2
sleep 1

# The source dies; the clone reconnects by itself once it is back.
not_converged "source restart"
kill -9 "$SRC_PID"
wait "$SRC_PID" 2>/dev/null || true
echo "source killed"
for ((i = 0; i < 200; i++)); do
  [ "$(clone_status state)" = reconnecting ] && break
  sleep 0.05
done
[ "$(clone_status state)" = reconnecting ] || fail "status does not say reconnecting: $("$FERRY" status "$T/clone.ctl")"
"$FERRY" status "$T/clone.ctl" | tee "$T/status"
grep -q "last error:.*lost.*reconnecting" "$T/status" || fail "status lacks the reason"
sleep 1
net_source "$T/src"
echo "source restarted"
# Everything has happened: let the rest hydrate at link speed.
"$FERRY" set-rate "$T/clone.ctl" 0 >/dev/null

"$FERRY" wait --timeout 240 "$T/clone.ctl" || { cat "$T/clone.log"; fail "clone did not converge"; }
touch "$T/stop-reader"
rc=0
wait "$reader" || rc=$?
cat "$T/reader.log"
[ $rc -eq 0 ] || { tail -30 "$T/clone.log"; fail "the reader saw an error or wrong data (exit $rc)"; }
grep -qE "^reads [1-9][0-9]*, errors 0, wrong 0" "$T/reader.log" || fail "reader: $(cat "$T/reader.log")"
grep -q "back after" "$T/clone.log" || fail "no reconnection in the clone's log"

kill -TERM "$CLONE_PID"
wait "$CLONE_PID" || fail "clone server exit status $?"
same_bytes "$T/src" "$T/dst"
echo "two outages and a source restart: no error, destination identical to the source"
