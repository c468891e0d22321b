#!/usr/bin/env bash
# `ferry hydrate --control`: steered through its socket (started paused, resumed), and the
# `ferry wait`s pending when it converges and exits get the converged answer (exit 0), not a
# vanished socket.  The destination then equals the source; the socket is gone.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-control.sh"
requires nbdkit nbdcopy

S=$T/ctl.sock
start_nbdkit "$T/src.sock" pattern size=32M
"$FERRY" hydrate --paused --control "$S" --workers 1 --rate 16M \
  --source "nbd+unix:///?socket=$T/src.sock" --map "$T/map.bin" "$T/dest.img" \
  >"$T/hydrate.out" 2>"$T/hydrate.err" &
hydrate=$!
track_pid $hydrate
wait_status "$S" 30 's["state"] == "paused"'
st=$("$FERRY" status --json "$S")
for kv in program="ferry hydrate" size=33554432 regions_total=512 bytes_copied=0; do
  [ "$(json_field "$st" "${kv%%=*}")" = "${kv#*=}" ] || fail "status ${kv%%=*}: $st"
done

"$FERRY" wait --progress --json "$S" >"$T/w1.json" 2>"$T/w1.err" &
w1=$!
"$FERRY" wait --no-progress "$S" >"$T/w2.out" 2>"$T/w2.err" &
w2=$!
track_pid $w1
track_pid $w2
# Both waits connected (plus this status request).
wait_status "$S" 10 's["control_clients"] >= 3'
"$FERRY" resume "$S" | grep -qF "$S: state hydrating" || fail "resume"

rc=0; wait $hydrate || rc=$?
[ $rc = 0 ] || fail "ferry hydrate exit $rc: $(cat "$T/hydrate.err")"
rc=0; wait $w1 || rc=$?
[ $rc = 0 ] || fail "ferry wait --progress exit $rc: $(cat "$T/w1.err")"
[ "$(json_field "$(cat "$T/w1.json")" state)" = converged ] || fail "w1: $(cat "$T/w1.json")"
grep -q '^converged \[#*\] 100% 32.0 MiB/32.0 MiB' "$T/w1.err" || fail "w1 bar: $(cat "$T/w1.err")"
rc=0; wait $w2 || rc=$?
[ $rc = 0 ] || fail "ferry wait --no-progress exit $rc: $(cat "$T/w2.err")"
grep -qx "$S: converged" "$T/w2.out" || fail "w2: $(cat "$T/w2.out")"

[ ! -e "$S" ] || fail "control socket left behind by ferry hydrate"
nbdcopy "nbd+unix:///?socket=$T/src.sock" "$T/src.img"
same_bytes "$T/src.img" "$T/dest.img"
echo "ferry hydrate control ok"
