#!/usr/bin/env bash
# `ferry hydrate --control`: status while paused, resume, set-rate (the rate limit holds),
# pause again, and wait until converged; the result is the source.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-clone.sh"
. "$TESTS_DIR/lib-control.sh"

head -c 24M /dev/urandom >"$T/src"
S=$T/ctl
"$FERRY" hydrate --source "$T/src" --map "$T/map" --paused --control "$S" --json "$T/dst" \
  >"$T/out.json" 2>"$T/err" &
pid=$!
track_pid $pid
wait_for_file "$S"

"$FERRY" status --json "$S" >"$T/s1"
st() { json_field "$(cat "$1")" "$2"; }
[ "$(st "$T/s1" state)" = paused ] || fail "not paused: $(cat "$T/s1")"
[ "$(st "$T/s1" regions_hydrated)" = 0 ] || fail "hydrated while paused"
[ "$(st "$T/s1" regions_total)" = 384 ] || fail "regions_total: $(cat "$T/s1")"
[ "$(st "$T/s1" program)" = "ferry hydrate" ] || fail "program: $(cat "$T/s1")"

# 8 MiB/s: the 24 MiB take about 3 s; after resume it must not be done within 1 s.
"$FERRY" set-rate "$S" 8M >/dev/null
"$FERRY" resume "$S" >/dev/null
start=$(date +%s.%N)
"$FERRY" status --json "$S" >"$T/s2"
[ "$(st "$T/s2" state)" = hydrating ] || fail "not hydrating: $(cat "$T/s2")"
[ "$(st "$T/s2" rate_limit)" = 8388608 ] || fail "rate limit: $(cat "$T/s2")"
"$FERRY" pause "$S" >/dev/null
"$FERRY" status --json "$S" >"$T/s3"
[ "$(st "$T/s3" state)" = paused ] || fail "not paused again: $(cat "$T/s3")"
hydrated=$(st "$T/s3" regions_hydrated)
[ "$hydrated" -lt 384 ] || fail "all hydrated despite the rate limit"
"$FERRY" resume "$S" >/dev/null
"$FERRY" wait "$S" >/dev/null || fail "wait did not report convergence"
end=$(date +%s.%N)
wait $pid || fail "ferry hydrate exited $?"
elapsed=$(/usr/bin/python3 -c "print(float('$end') - float('$start'))")
echo "hydrated at 8 MiB/s in $elapsed s"
/usr/bin/python3 -c "import sys; sys.exit(0 if $elapsed >= 1.5 else 1)" || fail "rate limit not applied ($elapsed s)"
[ "$(json_get "$T/out.json" state)" = converged ] || fail "final state"
same_bytes "$T/src" "$T/dst"
[ ! -e "$S" ] || fail "control socket left behind"
echo "control ok"
