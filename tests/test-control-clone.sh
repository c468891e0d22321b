#!/usr/bin/env bash
# The control socket over a hydrating clone (source: nbdkit pattern, rate-limited so states
# can be seen): exact status fields, pause stops the copy, set-rate changes the limit, resume
# continues, a pending "wait" does not block other clients and is answered at convergence,
# `ferry wait` exits 0 (and 1 on a timeout), and the destination then equals the source.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-control.sh"
requires nbdkit nbdcopy

S=$T/ctl.sock
start_nbdkit "$T/src.sock" pattern size=64M
truncate -s 64M "$T/dest.img"
# One worker: the hydrator then completes one 16 MiB batch a second, so progress, a pause
# and a resume can be seen in steps.  Started paused, so the first checks see a fixed state.
start_control_server "$T/srv.pid" --paused --workers 1 --rate 16M \
  --source "nbd+unix:///?socket=$T/src.sock" --map "$T/map.bin" "$T/dest.img" "$S"

st=$("$FERRY" status --json "$S")
for kv in state=paused size=67108864 region_size=65536 regions_total=1024 regions_hydrated=0 \
          bytes_copied=0 bytes_fetched=0 bytes_skipped=0 rate_limit=16777216 percent=0.0 \
          eta=null program=control-server last_error=; do
  [ "$(json_field "$st" "${kv%%=*}")" = "${kv#*=}" ] || fail "status ${kv%%=*}: $st"
done

# A raw "wait" stays pending while other clients are served at once.
control_request "$S" '{"command":"wait","id":"w1"}' >"$T/wait1.out" &
waiter=$!
track_pid $waiter
wait_status "$S" 10 's["control_clients"] == 2'
"$FERRY" status "$S" >"$T/human"
grep -qx '  state:       paused' "$T/human" || fail "human status: $(cat "$T/human")"
grep -qx '  progress:    0.0% (0 of 1024 regions of 64.0 KiB)' "$T/human" || fail "human progress"
grep -qx '  rate:        0 B/s (limit: 16.0 MiB/s)' "$T/human" || fail "human rate"
grep -qx '  eta:         unknown' "$T/human" || fail "human eta"

# ferry wait with a timeout, both ways (server-side wait and polling with progress).
expect_fail "$S: not converged after 0.3 s (state paused, 0.0% hydrated)" \
  "$FERRY" wait --timeout 0.3 --no-progress "$S"
expect_fail "$S: not converged after 0.3 s (state paused, 0.0% hydrated)" \
  "$FERRY" wait --timeout 0.3 --progress "$S"
[ "$(status_field "$S" bytes_copied)" = 0 ] || fail "copied while paused from the start"

# Resume, then pause once the copy has made progress: the state says so, the copy stops.
"$FERRY" resume "$S" | grep -qF "$S: state hydrating" || fail "resume reply"
wait_status "$S" 30 's["bytes_copied"] > 0'
"$FERRY" pause "$S" | grep -qF "$S: state paused" || fail "pause reply"
[ "$(status_field "$S" state)" = paused ] || fail "not paused"
# Let an in-flight batch land, then the count must stand still.
b0=-1 b1=$(status_field "$S" bytes_copied)
while [ "$b0" != "$b1" ]; do sleep 0.3; b0=$b1 b1=$(status_field "$S" bytes_copied); done
sleep 1.5 # at 16 MiB/s a running copy would finish a 16 MiB batch meanwhile
b2=$(status_field "$S" bytes_copied)
[ "$b1" = "$b2" ] || fail "bytes_copied grew while paused: $b1 -> $b2"
[ "$b2" -lt 67108864 ] || fail "converged before the pause could be seen"
[ "$(status_field "$S" state)" = paused ] || fail "paused state lost"
echo "ok: paused at $b2 bytes"

# set-rate: a number or a size; the status reports it.
"$FERRY" set-rate "$S" 32M | grep -qF "rate limit 32.0 MiB/s" || fail "set-rate reply"
[ "$(status_field "$S" rate_limit)" = 33554432 ] || fail "rate_limit after set-rate 32M"
r=$(control_request "$S" '{"command":"set-rate","rate":20000000}')
[ "$(json_field "$r" status.rate_limit)" = 20000000 ] || fail "set-rate number: $r"

# Resume: the copy goes on.
"$FERRY" resume "$S" | grep -qF "$S: state hydrating" || fail "resume reply"
wait_status "$S" 30 "s[\"bytes_copied\"] > $b2"
echo "ok: resumed"
"$FERRY" set-rate --json "$S" 0 >"$T/rate.json"
[ "$(json_field "$(cat "$T/rate.json")" rate_limit)" = 0 ] || fail "set-rate 0"

# Wait for convergence with a progress display (not a terminal: one line a second).
"$FERRY" wait --progress --json "$S" >"$T/final.json" 2>"$T/progress.txt" ||
  fail "ferry wait failed: $(cat "$T/progress.txt")"
final=$(cat "$T/final.json")
[ "$(json_field "$final" state)" = converged ] || fail "final: $final"
[ "$(json_field "$final" regions_hydrated)" = 1024 ] || fail "regions_hydrated: $final"
[ "$(json_field "$final" percent)" = 100.0 ] || fail "percent: $final"
grep -q '^converged \[#*\] 100% 64.0 MiB/64.0 MiB' "$T/progress.txt" || fail "progress: $(cat "$T/progress.txt")"
"$FERRY" wait "$S" | grep -qx "$S: converged" || fail "ferry wait after convergence"
"$FERRY" status "$S" | grep -qx '  eta:         done' || fail "eta after convergence"

# The pending raw wait was answered with the converged status and its id.
wait "$waiter" || fail "raw waiter failed"
w=$(cat "$T/wait1.out")
[ "$(json_field "$w" ok)" = true ] && [ "$(json_field "$w" id)" = w1 ] &&
  [ "$(json_field "$w" status.state)" = converged ] || fail "raw wait reply: $w"

# And the data is the source's.
nbdcopy "nbd+unix:///?socket=$T/src.sock" "$T/src.img"
same_bytes "$T/src.img" "$T/dest.img"
kill "$(cat "$T/srv.pid")"
echo "control over a clone ok"
