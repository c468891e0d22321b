#!/usr/bin/env bash
# ferry migrate --ssh HOST: the destination clone server is started through ssh with both
# sockets forwarded (-L local:remote).  No second host here: $FERRY_SSH points at a stand-in
# that runs the remote command locally and turns each -L into a symlink to the remote socket,
# so the command line ferry builds is the one that runs.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
make_world
make_fake_ssh

migrate --storage fs --datastores "$T/ds" --ssh node-b.example --journal "$T/j.json" --dry-run \
  > "$T/dry" || fail "dry run"
w=$T/j.json.d
want="  disk 0 destination clone: $T/fake-ssh -o BatchMode=yes -o ExitOnForwardFailure=yes -L $w/disk-0.sock:$w/disk-0.remote.sock -L $w/disk-0.ctl:$w/disk-0.remote.ctl node-b.example -- 'ferry-nbd --foreground --socket $w/disk-0.remote.sock --control $w/disk-0.remote.ctl --pidfile $w/disk-0.remote.pid --new-map --source SOURCE --map $w/disk-0.map DESTINATION'"
grep -qxF -- "$want" "$T/dry" || { cat "$T/dry"; fail "ssh command line differs"; }

migrate --storage fs --datastores "$T/ds" --ssh node-b.example --journal "$T/j.json" \
  > "$T/out" 2>&1 || { cat "$T/out"; fail "migrate --ssh failed"; }
grep -qE "^downtime: [0-9.]+ s " "$T/out" || fail "no downtime line"
cmp "$T/ds/100/42/disk.0" "$T/source.orig" || fail "destination differs"
# Started once, stopped once (kill -TERM through ssh), both on the named host.
[ "$(sort -u "$T/ssh.log")" = node-b.example ] && [ "$(wc -l < "$T/ssh.log")" = 2 ] ||
  fail "ssh calls: $(cat "$T/ssh.log")"
grep -qF "ferry-nbd stopped, map committed" "$T/out" || fail "server not stopped gracefully"
echo "migrate --ssh ok"
