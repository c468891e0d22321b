#!/usr/bin/env bash
# The control socket's life: mode 0600, a live socket refused, a stale one replaced, a
# non-socket refused untouched, unlinked at stop; the ferry commands' connection errors and
# bad usage; a plain volume's status ("direct").
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-control.sh"

S=$T/ctl.sock
start_control_server "$T/a.pid" --size 1G --clients 3 "$S"
pid_a=$(cat "$T/a.pid")

# Owner-only socket.
[ "$(stat -c %a "$S")" = 600 ] || fail "socket mode $(stat -c %a "$S"), want 600"

# Plain volume: exact status fields.
reply=$(control_request "$S" '{"command":"status"}')
[ "$(json_field "$reply" ok)" = true ] || fail "status not ok: $reply"
[ "$(json_field "$reply" status.state)" = direct ] || fail "state: $reply"
[ "$(json_field "$reply" status.size)" = 1073741824 ] || fail "size: $reply"
[ "$(json_field "$reply" status.clients)" = 3 ] || fail "clients: $reply"
[ "$(json_field "$reply" status.program)" = control-server ] || fail "program: $reply"
[ "$(json_field "$reply" status.pid)" = "$pid_a" ] || fail "pid: $reply"
[ "$(json_field "$reply" status.eta)" = null ] || fail "eta: $reply"

"$FERRY" status "$S" >"$T/out"
grep -qx '  state:       direct (a plain volume, nothing to hydrate)' "$T/out" || fail "human status: $(cat "$T/out")"
grep -qx '  size:        1.0 GiB' "$T/out" || fail "human size: $(cat "$T/out")"
"$FERRY" status --json "$S" >"$T/json"
[ "$(json_field "$(cat "$T/json")" state)" = direct ] || fail "--json: $(cat "$T/json")"
# A plain volume has nothing to wait for; it has no hydrator to pause.
"$FERRY" wait --no-progress "$S" | grep -qF "nothing to wait for" || fail "wait on direct"
"$FERRY" wait --progress "$S" 2>/dev/null | grep -qF "nothing to wait for" || fail "wait --progress on direct"
expect_fail "$S: pause: control-server serves a plain volume (state \"direct\"): there is no hydrator" \
  "$FERRY" pause "$S"
expect_fail "$S: set-rate: control-server serves a plain volume" "$FERRY" set-rate "$S" 50M

# A second server on a live socket is refused and the first one keeps serving.
expect_fail "$S: control socket in use by a running ferry process" \
  "$CONTROL_SERVER" --size 1M "$S"
[ "$(json_field "$(control_request "$S" '{"command":"status"}')" status.pid)" = "$pid_a" ] ||
  fail "first server lost its socket"

# Stop it: the socket file goes away with it.
kill "$pid_a"
wait "$pid_a" || fail "control-server exit status $?"
[ ! -e "$S" ] || fail "socket not removed at stop"
expect_fail "$S: no such control socket" "$FERRY" status "$S"

# A stale socket file (bound, nobody listening): ferry reports it, a new server replaces it.
/usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$S"
[ -S "$S" ] || fail "no stale socket made"
expect_fail "$S: no ferry process is listening (connection refused)" "$FERRY" status "$S"
expect_fail "$S: no ferry process is listening (connection refused)" "$FERRY" wait "$S"
start_control_server "$T/b.pid" --size 2M "$S"
[ "$(json_field "$(control_request "$S" '{"command":"status"}')" status.size)" = 2097152 ] ||
  fail "stale socket not replaced"
kill "$(cat "$T/b.pid")"

# Not a socket: refused, the file untouched.
echo precious >"$T/file"
expect_fail "$T/file: exists and is not a socket (not replacing it)" \
  "$CONTROL_SERVER" --size 1M "$T/file"
[ "$(cat "$T/file")" = precious ] || fail "regular file changed"
expect_fail "$T/file: not a control socket (not a socket file)" "$FERRY" status "$T/file"
# A path too long for a unix socket.
long=$T/$(printf 'x%.0s' {1..120})
expect_fail "control socket path longer than 107 bytes" "$CONTROL_SERVER" --size 1M "$long"
expect_fail "control socket path longer than 107 bytes" "$FERRY" status "$long"

# Bad usage: exit 2 with a message naming the problem.
usage() {
  local want=$1; shift
  local rc=0
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ $rc -eq 2 ] || fail "'$*' exit $rc, want 2"
  grep -qF -- "$want" "$T/err" || fail "'$*' stderr lacks '$want': $(cat "$T/err")"
}
usage "ferry status: expected one CONTROL socket path, got 0 arguments" "$FERRY" status
usage "ferry status: expected one CONTROL socket path, got 2 arguments" "$FERRY" status a b
usage "ferry status: unknown option '--frob'" "$FERRY" status --frob "$S"
usage "ferry status: unknown option '--timeout'" "$FERRY" status --timeout 3 "$S"
usage "ferry wait: --timeout: 'soon' is not a number of seconds >= 0" "$FERRY" wait --timeout soon "$S"
usage "ferry wait: --timeout: '-1' is not a number of seconds >= 0" "$FERRY" wait --timeout -1 "$S"
usage "ferry wait: option '--timeout' needs a value" "$FERRY" wait "$S" --timeout
usage "ferry pause: unknown option '-x'" "$FERRY" pause -x "$S"
usage "ferry set-rate: expected CONTROL and RATE, got 1 argument" "$FERRY" set-rate "$S"
usage "ferry set-rate: RATE: 'fast' is not a size" "$FERRY" set-rate "$S" fast
usage "ferry resume: expected one CONTROL socket path, got 0 arguments" "$FERRY" resume

# --help for each command, and the commands listed by ferry --help.
for c in status wait pause resume set-rate; do
  "$FERRY" "$c" --help | grep -q "^Usage: ferry $c " || fail "ferry $c --help"
  "$FERRY" --help | grep -q "^  $c " || fail "ferry --help lacks $c"
done
echo "control socket ok"
