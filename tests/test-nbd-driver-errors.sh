#!/usr/bin/env bash
# The nbd volume driver refuses bad URIs, reports refused connections, read-only servers,
# server errors and a server that dies mid-transfer with a message naming the problem — and
# never hangs.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
requires nbdkit nbdcopy

V=("$VOLTOOL")
# Bad URIs: refused before any connection, naming the fault.
expect_fail "nbd://localhost:99999/: bad port '99999' in NBD URI (want 1-65535)" "${V[@]}" info nbd://localhost:99999/
expect_fail "nbd://localhost:ab/: bad port 'ab' in NBD URI" "${V[@]}" info nbd://localhost:ab/
expect_fail "nbd:///disk: NBD URI lacks a host (nbd://host[:port]/export)" "${V[@]}" info nbd:///disk
expect_fail "nbd+unix:///disk: nbd+unix URI lacks ?socket=PATH" "${V[@]}" info nbd+unix:///disk
expect_fail "nbd+unix://host/?socket=/x: nbd+unix URI must not name a host" "${V[@]}" info "nbd+unix://host/?socket=/x"
expect_fail "nbd+unix:///?socket=: empty socket= path in NBD URI" "${V[@]}" info "nbd+unix:///?socket="
expect_fail "nbd://localhost/?socket=/x: socket= is only valid with nbd+unix://" "${V[@]}" info "nbd://localhost/?socket=/x"
expect_fail "nbdfoo://x/: unsupported NBD URI scheme 'nbdfoo'" "${V[@]}" info nbdfoo://x/

# Nobody listening.
expect_fail "nbd+unix:///?socket=$T/none.sock: cannot connect: No such file or directory" \
  "${V[@]}" info "nbd+unix:///?socket=$T/none.sock"
PORT=$(free_port)
expect_fail "nbd://127.0.0.1:$PORT/: cannot connect: Connection refused" "${V[@]}" info "nbd://127.0.0.1:$PORT/"

# A read-only server: writes, zeroes and trims refused, data unchanged.
head -c 1M /dev/urandom >"$T/data"
start_nbdkit "$T/ro.sock" -r file "$T/data"
RO="nbd+unix:///?socket=$T/ro.sock"
expect_fail "$RO: write refused: the volume is read-only" "${V[@]}" write "$RO" 0 <"$T/data"
expect_fail "$RO: write zeroes refused: the volume is read-only" "${V[@]}" zero "$RO" 0 4096
expect_fail "$RO: trim refused: the volume is read-only" "${V[@]}" trim "$RO" 0 4096
"$VOLTOOL" cat "$RO" >"$T/back"
same_bytes "$T/data" "$T/back"
# Beyond the end.
expect_fail "$RO: read of 2097152 bytes at offset 0 is beyond the end (size 1048576)" \
  "${V[@]}" read "$RO" 0 2M

# Server errors come back with the operation and errno.
start_nbdkit "$T/err.sock" --filter=error memory size=1M error=EIO error-pread-rate=100%
expect_fail "nbd+unix:///?socket=$T/err.sock: read 4096 bytes at offset 8192: Input/output error" \
  "${V[@]}" read "nbd+unix:///?socket=$T/err.sock" 8192 4096
start_nbdkit "$T/werr.sock" --filter=error memory size=1M error=ENOSPC error-pwrite-rate=100%
expect_fail "nbd+unix:///?socket=$T/werr.sock: write 4096 bytes at offset 0: No space left on device" \
  "${V[@]}" write "nbd+unix:///?socket=$T/werr.sock" 0 < <(head -c 4096 /dev/zero)

# A server killed mid-transfer and not coming back: requests in flight wait for the
# connection (--reconnect-wait 2), then fail; nothing hangs.
start_nbdkit "$T/die.sock" --filter=delay memory size=64M rdelay=20ms
"$VOLTOOL" --reconnect-wait 2 cat -t 16 -r 64K "nbd+unix:///?socket=$T/die.sock" >"$T/partial" 2>"$T/die.err" &
cat_pid=$!
sleep 0.3 # let reads be in flight (any moment will do)
kill -9 "$NBDKIT_PID"
rc=0
timeout 20 tail --pid="$cat_pid" -f /dev/null || rc=$?
[ $rc -eq 0 ] || fail "voltool hung after the server died"
rc=0; wait "$cat_pid" || rc=$?
[ $rc -eq 1 ] || fail "voltool exit $rc after the server died"
grep -qF "connection to the NBD server lost" "$T/die.err" || fail "message: $(cat "$T/die.err")"

# A server that goes silent (every read takes 10 s): with --timeout 1 the connection is
# dropped after ~1 s, the read is tried again on a new connection until --reconnect-wait,
# and fails saying so.
start_nbdkit "$T/silent.sock" --filter=delay memory size=1M rdelay=10
t0=$(date +%s)
expect_fail "nbd+unix:///?socket=$T/silent.sock: read 4096 bytes at offset 0: connection to the NBD server lost (the NBD server stopped answering (connection dropped))" \
  "$VOLTOOL" --timeout 1 --reconnect-wait 2 read "nbd+unix:///?socket=$T/silent.sock" 0 4096
[ $(($(date +%s) - t0)) -lt 8 ] || fail "the watchdog took too long"
echo "nbd driver errors ok"
