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

# start_traced SYSCALLS SOCK ARGS...: ferry-nbd under `strace -f -e trace=SYSCALLS`, the calls
# written to $TRACE (a new $T/strace.N each time); sets SRV_PID (ferry-nbd's) and TRACE_PID.
n_trace=0
start_traced() {
  local calls=$1 sock=$2 pidf="$T/traced.$n_trace.pid"
  shift 2
  n_trace=$((n_trace + 1))
  # LeakSanitizer cannot run under ptrace: no leak check for these runs (the other nbd
  # tests check the same paths for leaks without strace).
  ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 strace -f -qq -e trace="$calls" \
    -o "$T/strace.$n_trace" "$FERRY_NBD" --foreground --socket "$sock" --pidfile "$pidf" "$@" 2>>"$T/ferry-nbd.log" &
  TRACE_PID=$!
  track_pid "$TRACE_PID"
  wait_for_server "$TRACE_PID" "$pidf" "$T/ferry-nbd.log" ferry-nbd
  SRV_PID=$(cat "$pidf")
  # First at exit: strace killed first would leave it stopped, and running.
  cleanup "kill -KILL $SRV_PID 2>/dev/null"
  TRACE=$T/strace.$n_trace
}
# stop_traced: SIGTERM to ferry-nbd, and it must exit cleanly.
stop_traced() {
  kill -TERM "$SRV_PID"
  wait "$TRACE_PID" || fail "ferry-nbd (under strace) did not exit cleanly"
}
