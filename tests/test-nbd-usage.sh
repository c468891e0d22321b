#!/usr/bin/env bash
# ferry-nbd's command line: --help, bad flags (exit 2 with a message naming the problem),
# startup failures (exit 1 naming the thing that failed), and nothing left behind.
. "$TESTS_DIR/functions.sh"

"$FERRY_NBD" --help | grep -q -- '--export-name NAME' || fail "--help lacks --export-name"
"$FERRY_NBD" --version | grep -q '^ferry-nbd [0-9]' || fail "no version"

usage() { # usage TEXT ARGS...: exit status 2 and TEXT on stderr
  local want=$1; shift
  local rc=0
  "$FERRY_NBD" "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ $rc -eq 2 ] || { cat "$T/err"; fail "ferry-nbd $*: exit $rc, want 2"; }
  grep -qF -- "$want" "$T/err" || { cat "$T/err"; fail "ferry-nbd $*: stderr lacks '$want'"; }
  echo "ok: $*"
}
truncate -s 1M "$T/disk"
usage "unknown option '--frobnicate'" --frobnicate "$T/disk"
usage "missing VOLUME" -f
usage "unexpected argument" "$T/disk" "$T/disk"
usage "option '--socket' needs a value" "$T/disk" --socket
usage "--threads: 0 is out of range" --threads 0 "$T/disk"
usage "--max-clients: 'lots' is not a number" --max-clients lots "$T/disk"
usage "--poll-us: 1001 is out of range (0..1000)" --poll-us 1001 "$T/disk"
usage "--poll-us: 'fast' is not a number" --poll-us fast "$T/disk"
usage "--min-block-size: 3 is not a power of two" --min-block-size 3 "$T/disk"
usage "--min-block-size: 128K is not a power of two between 1 and 64K" --min-block-size 128K "$T/disk"
usage "--source needs --map" --source "$T/disk" "$T/disk"
usage "--map needs --source" --map "$T/map" "$T/disk"
usage "--region-size, --workers and --rate apply to a clone" --rate 1M "$T/disk"
usage "--region-size: 1000 is not a power of two" --source "$T/disk" --map "$T/m" --region-size 1000 "$T/disk"
usage "missing DEST" --source "$T/disk" --map "$T/m"
long=$(head -c 5000 /dev/zero | tr '\0' x)
usage "--export-name: longer than 4096 bytes" --export-name "$long" "$T/disk"

# Startup failures: exit 1, the message names what failed, no pidfile or socket left.
expect_fail "$T/missing" "$FERRY_NBD" -f --socket "$T/s1" --pidfile "$T/p1" "$T/missing"
[ ! -e "$T/p1" ] && [ ! -e "$T/s1" ] || fail "left a pidfile or socket behind"
expect_fail "not a port number" "$FERRY_NBD" -f --listen 127.0.0.1:99999 "$T/disk"
expect_fail "--listen [::1: expected [IPv6]:PORT" "$FERRY_NBD" -f --listen '[::1' "$T/disk"
expect_fail "unsupported URI scheme 'gopher'" "$FERRY_NBD" -f --socket "$T/s2" gopher://x/y
# Daemonizing: the parent reports a failure of the child with exit 1 too.
expect_fail "$T/missing" "$FERRY_NBD" --socket "$T/s3" "$T/missing"
[ ! -e "$T/s3" ] || fail "socket left behind"

# A socket a live server owns is never taken over.
"$FERRY_NBD" --socket "$T/live" --pidfile "$T/live.pid" "$T/disk"
track_pid "$(cat "$T/live.pid")"
expect_fail "another server is listening there" "$FERRY_NBD" -f --socket "$T/live" "$T/disk"
nbdinfo --size "nbd+unix:///?socket=$T/live" | grep -qx 1048576 || fail "live server harmed"
# A file that is not a socket is not replaced either.
echo keep >"$T/plain"
expect_fail "exists and is not a socket" "$FERRY_NBD" -f --socket "$T/plain" "$T/disk"
grep -qx keep "$T/plain" || fail "plain file clobbered"
# -v and FERRY_DEBUG=nbd: debug messages on stderr naming the client and the options.
for how in "-v" "FERRY_DEBUG=nbd"; do
  rm -f "$T/dbg.pid"
  if [ "$how" = -v ]; then
    "$FERRY_NBD" -f -v --socket "$T/dbg" --pidfile "$T/dbg.pid" "$T/disk" 2>"$T/dbg.log" &
  else
    FERRY_DEBUG=nbd "$FERRY_NBD" -f --socket "$T/dbg" --pidfile "$T/dbg.pid" "$T/disk" 2>"$T/dbg.log" &
  fi
  dpid=$!
  track_pid $dpid
  wait_for_pidfile "$T/dbg.pid" >/dev/null
  nbdinfo --size "nbd+unix:///?socket=$T/dbg" >/dev/null
  kill -TERM $dpid
  wait $dpid || fail "debug server exit status"
  grep -q "debug: nbd: .*option NBD_OPT_GO" "$T/dbg.log" || { cat "$T/dbg.log"; fail "$how: no debug output"; }
done
echo "usage ok"
