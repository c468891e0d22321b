# Helpers for tests/test-nbd-*.sh (source after functions.sh).

# start_ferry_nbd SOCKET ARGS...: ferry-nbd in the foreground on a unix socket; waits for
# its pidfile (written once it accepts connections) and sets $NBD_PID and $NBD_URI.
start_ferry_nbd() {
  local sock=$1; shift
  local pidf="$T/ferry-nbd.$RANDOM.pid"
  "$FERRY_NBD" --foreground --socket "$sock" --pidfile "$pidf" "$@" 2>>"$T/ferry-nbd.log" &
  NBD_PID=$!
  track_pid "$NBD_PID"
  wait_for_server "$NBD_PID" "$pidf" "$T/ferry-nbd.log" ferry-nbd
  NBD_URI="nbd+unix:///?socket=$sock"
}

# stop_ferry_nbd: SIGTERM, and the server must exit 0 (under ASan a leak makes it fail).
stop_ferry_nbd() {
  kill -TERM "$NBD_PID"
  local rc=0
  wait "$NBD_PID" || rc=$?
  [ $rc -eq 0 ] || { cat "$T/ferry-nbd.log" >&2; fail "ferry-nbd exited with $rc after SIGTERM"; }
}
