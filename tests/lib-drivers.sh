# Helpers for the volume driver tests (tests/test-nbd-driver-*.sh, test-http-driver-*.sh).
# Source after functions.sh.  They drive one volume through $VOLTOOL (tests/voltool.c).

: "${VOLTOOL:?run through meson test}"

# wait_for_port PORT [SECONDS]: poll until something accepts on 127.0.0.1:PORT.
wait_for_port() {
  local port=$1 limit=${2:-30} i
  for ((i = 0; i < limit * 20; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  fail "timed out waiting for 127.0.0.1:$port"
}

# nbdkit_tcp PORT PLUGIN ARGS...: the same on 127.0.0.1:PORT.
nbdkit_tcp() {
  local port=$1; shift
  local pidf="$T/nbdkit.$RANDOM.pid"
  nbdkit --exit-with-parent -i 127.0.0.1 -p "$port" -P "$pidf" "$@" 2>>"$T/nbdkit.log" &
  NBDKIT_PID=$!
  track_pid "$NBDKIT_PID"
  wait_for_pidfile "$pidf" >/dev/null
  wait_for_port "$port"
}

# start_qemu_nbd SOCKET ARGS...: qemu-nbd on a unix socket (persistent), waits, tracks.
start_qemu_nbd() {
  local sock=$1; shift
  local pidf="$T/qemu-nbd.$RANDOM.pid"
  qemu-nbd -k "$sock" --pid-file="$pidf" -t "$@" 2>>"$T/qemu-nbd.log" &
  track_pid $!
  wait_for_pidfile "$pidf" >/dev/null
  wait_for_file "$sock"
}

# nbd_map URI: nbdinfo --map as "offset length type" lines, neighbours of one type merged
# (voltool extents merges them too).
nbd_map() {
  nbdinfo --map "$1" | awk '
    { if (n && $3 == t && o + l == $1) { l += $2; next }
      if (n) print o, l, t
      o = $1; l = $2; t = $3; n = 1 }
    END { if (n) print o, l, t }'
}

# start_responder FILE ARGS...: tests/http-responder.py on a free port; sets $HTTP_PORT.
start_responder() {
  local file=$1; shift
  local portf="$T/responder.$RANDOM.port"
  /usr/bin/python3 "$TESTS_DIR/http-responder.py" "$file" "$portf" "$@" &
  track_pid $!
  wait_for_file "$portf"
  HTTP_PORT=$(cat "$portf")
  wait_for_port "$HTTP_PORT"
}

# start_lighttpd DOCROOT: lighttpd -D on 127.0.0.1 at a free port; sets $HTTP_PORT and
# $LIGHTTPD_PID.
start_lighttpd() {
  HTTP_PORT=$(free_port)
  cat >"$T/lighttpd.conf" <<CONF
server.document-root = "$1"
server.bind = "127.0.0.1"
server.port = $HTTP_PORT
server.errorlog = "$T/lighttpd.log"
CONF
  lighttpd -D -f "$T/lighttpd.conf" 2>>"$T/lighttpd.log" &
  LIGHTTPD_PID=$!
  track_pid "$LIGHTTPD_PID"
  wait_for_port "$HTTP_PORT"
}

# elapsed_ms OUT CMD...: run CMD with stdout to OUT, print its wall time in milliseconds.
elapsed_ms() {
  local out=$1 t0 t1
  shift
  t0=$(date +%s%N)
  "$@" >"$out"
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
