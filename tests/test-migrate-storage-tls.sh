#!/usr/bin/env bash
# ferry migrate --ssh HOST --tls-listen ADDR:PORT --tls-certificates DIR: the destination
# clone server is started through ssh but serves NBD over TLS TCP (disk N on PORT + N) instead
# of a unix socket forwarded by ssh; only the control socket goes through ssh.  As in
# test-migrate-storage-ssh.sh, $FERRY_SSH is a stand-in that runs the "remote" command here
# and turns each -L into a symlink; the TLS link is real (127.0.0.1), and the migrator's first
# read of the destination goes through it with the client half of the same directory.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
. "$TESTS_DIR/lib-tls.sh"
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"
make_world
make_tls
# One directory with both halves (the same path on both "hosts").
mkdir "$T/pki"
cp "$TLS"/server/* "$T/pki/"
cp "$TLS"/client/client-* "$T/pki/"
make_fake_ssh
port=$(free_port)

migrate --storage fs --datastores "$T/ds" --ssh root@node-b.example --tls-listen "127.0.0.1:$port" \
  --tls-certificates "$T/pki" --journal "$T/j.json" --dry-run >"$T/dry" || fail "dry run"
w=$T/j.json.d
want="  disk 0 destination clone: $T/fake-ssh -o BatchMode=yes -o ExitOnForwardFailure=yes -L $w/disk-0.ctl:$w/disk-0.remote.ctl root@node-b.example -- 'ferry-nbd --foreground --listen 127.0.0.1:$port --tls-certificates $T/pki --control $w/disk-0.remote.ctl --pidfile $w/disk-0.remote.pid --new-map --source SOURCE --map $w/disk-0.map DESTINATION'"
grep -qxF -- "$want" "$T/dry" || { cat "$T/dry"; fail "command line differs"; }
expect_fail "--tls-listen and --tls-certificates go together" \
  migrate --storage fs --datastores "$T/ds" --tls-listen "127.0.0.1:$port" --journal "$T/x.json"
expect_fail "not with --frontend fuse" migrate --storage fs --datastores "$T/ds" --frontend fuse \
  --tls-listen "127.0.0.1:$port" --tls-certificates "$T/pki" --journal "$T/x.json"

migrate --storage fs --datastores "$T/ds" --ssh root@node-b.example --tls-listen "127.0.0.1:$port" \
  --tls-certificates "$T/pki" --journal "$T/j.json" >"$T/out" 2>&1 || { cat "$T/out"; fail "migrate failed"; }
cat "$T/out"
grep -qE "^downtime: [0-9.]+ s " "$T/out" || fail "no downtime line"
grep -qF -- "--listen 127.0.0.1:$port --tls-certificates" "$T/out" || fail "not served over TLS TCP"
cmp "$T/ds/100/42/disk.0" "$T/source.orig" || fail "destination differs"
# Only the control socket was forwarded.
[ "$(cat "$T/ssh.log.forwards")" = "$w/disk-0.ctl:$w/disk-0.remote.ctl" ] ||
  fail "forwards: $(cat "$T/ssh.log.forwards")"
grep -qF "ferry-nbd stopped, map committed" "$T/out" || fail "server not stopped gracefully"
# (The first read went through TLS: with credentials ferry-nbd runs --tls=require.)
echo "migrate over TLS TCP ok"
