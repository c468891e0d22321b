#!/usr/bin/env bash
# ferry migrate --ssh HOST against a real OpenSSH server: sshd on 127.0.0.1 (random port,
# throwaway host and user keys under $T), so the destination clone server really runs in an
# ssh session and both of its unix sockets really come through ssh's -L forwarding.  The
# "remote" host is this machine; ferry-nbd is found in the session's PATH (sshd SetEnv).
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
make_world
# ferry runs $FERRY_SSH as its ssh client: the test sshd's client (key and port).
start_sshd
export FERRY_SSH=$T/ssh

before=$(sha "$T/source.orig")
migrate --storage fs --datastores "$T/ds" --ssh root@127.0.0.1 --journal "$T/j.json" \
  > "$T/out" 2>&1 || { cat "$T/out" "$T/sshd.log"; fail "migrate --ssh failed"; }
grep -qE "^downtime: [0-9.]+ s " "$T/out" || fail "no downtime line"
grep -qF "ferry-nbd stopped, map committed" "$T/out" || { cat "$T/out"; fail "not stopped gracefully"; }
[ "$(sha "$T/ds/100/42/disk.0")" = "$before" ] || fail "destination differs from the source"
[ "$(xpath "select body from history where vid=42 and seq=1" DS_ID)" = 100 ] ||
  fail "history DS_ID not switched"
# The login check, the server's start and its stop: three sessions really went through sshd.
n=$(grep -c "Accepted publickey for root" "$T/sshd.log" || true)
[ "$n" -ge 3 ] || { cat "$T/sshd.log"; fail "expected >= 3 ssh sessions, sshd saw $n"; }
# Nothing of the remote session is left: no ferry-nbd serving the move's sockets.
! pgrep -f "$T/j.json.d/disk-0.remote.sock" >/dev/null || fail "remote ferry-nbd still running"
echo "migrate --ssh through a real sshd ok"
