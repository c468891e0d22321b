#!/usr/bin/env bash
# A clone whose source fails every read: `ferry wait` (both the server-side wait and the
# polling progress display) exits 1 with the reason; status shows state failed and the error.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-control.sh"
requires nbdkit

S=$T/ctl.sock
start_nbdkit "$T/src.sock" --filter=error pattern size=8M error-pread-rate=100% error=EIO \
  2>"$T/nbdkit.err"
truncate -s 8M "$T/dest.img"
start_control_server "$T/srv.pid" --source "nbd+unix:///?socket=$T/src.sock" \
  --map "$T/map.bin" "$T/dest.img" "$S" 2>"$T/server.err"

"$FERRY" wait --progress "$S" >"$T/out2" 2>"$T/err2" &
poller=$!
expect_fail "$S: clone failed: " "$FERRY" wait --no-progress "$S"
grep -qF "Input/output error" "$T/err" || fail "reason lacks the source error: $(cat "$T/err")"
rc=0; wait "$poller" || rc=$?
[ $rc = 1 ] || fail "ferry wait --progress exit $rc, want 1"
grep -qF "$S: clone failed: " "$T/err2" || fail "ferry wait --progress: $(cat "$T/err2")"

"$FERRY" status "$S" >"$T/status"
grep -qx '  state:       failed' "$T/status" || fail "status: $(cat "$T/status")"
grep -q '^  last error:  .*Input/output error' "$T/status" || fail "last error: $(cat "$T/status")"
# A raw wait on a failed clone is answered at once with the reason.
r=$(control_request "$S" '{"command":"wait"}')
[ "$(json_field "$r" ok)" = false ] || fail "wait on failed: $r"
json_field "$r" error | grep -q '^clone failed: .*Input/output error' || fail "wait error: $r"
kill "$(cat "$T/srv.pid")"
echo "failed clone reported ok"
