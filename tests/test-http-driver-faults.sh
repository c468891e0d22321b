#!/usr/bin/env bash
# The http volume driver against servers that misbehave (tests/http-responder.py): Range
# ignored, 206 without Content-Range, 5xx then success (retried), 5xx for good (exact message
# once retries are exhausted), 4xx (not retried), a size that changes under us, and HEAD
# without Content-Length (size from the ranged GET).
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"

head -c 6M /dev/urandom >"$T/img"
SIZE=$(stat -c %s "$T/img")

start_responder "$T/img" --mode norange
expect_fail "http://127.0.0.1:$HTTP_PORT/img: read 1 bytes at offset 0: server does not support Range requests (HTTP 200 to a ranged GET)" \
  "$VOLTOOL" info "http://127.0.0.1:$HTTP_PORT/img"

start_responder "$T/img" --mode nocr
expect_fail "http://127.0.0.1:$HTTP_PORT/img: read 1 bytes at offset 0: server does not support Range requests (HTTP 206 without a Content-Range)" \
  "$VOLTOOL" info "http://127.0.0.1:$HTTP_PORT/img"

# Three 503s, then service: the default 5 retries absorb them, the bytes are right.
start_responder "$T/img" --fail-first 3
"$VOLTOOL" -v cat -t 4 -r 1M "http://127.0.0.1:$HTTP_PORT/img" >"$T/out" 2>"$T/log"
same_bytes "$T/img" "$T/out"
[ "$(grep -c 'HTTP 503 Service Unavailable, retrying' "$T/log")" -eq 3 ] || fail "3 retries: $(cat "$T/log")"

# 503 for good: the exact message after 1 + 2 attempts.
start_responder "$T/img" --fail-first 1000
expect_fail "http://127.0.0.1:$HTTP_PORT/img: read 1 bytes at offset 0: HTTP 503 Service Unavailable (gave up after 3 attempts)" \
  "$VOLTOOL" --retries 2 info "http://127.0.0.1:$HTTP_PORT/img"

# A 4xx on GET is final: no retry, and said plainly.
start_responder "$T/img" --fail-first 1000 --fail-code 403
"$VOLTOOL" -v --retries 2 info "http://127.0.0.1:$HTTP_PORT/img" 2>"$T/log" && fail "403 accepted"
grep -qxF "voltool: http://127.0.0.1:$HTTP_PORT/img: read 1 bytes at offset 0: HTTP 403 Forbidden" "$T/log" ||
  fail "403 message: $(cat "$T/log")"
! grep -q retrying "$T/log" || fail "a 403 was retried"

# The size changes under us after a few reads: refused, naming both sizes.
start_responder "$T/img" --grow-after 3
expect_fail "size changed from $SIZE to $((SIZE + 1048576)) bytes since open" \
  "$VOLTOOL" cat -t 1 -r 1M "http://127.0.0.1:$HTTP_PORT/img"

# HEAD without Content-Length: the size comes from the probe's Content-Range.
start_responder "$T/img" --no-length
"$VOLTOOL" info "http://127.0.0.1:$HTTP_PORT/img" | grep -qx "size: $SIZE" || fail "size by probe"
"$VOLTOOL" cat "http://127.0.0.1:$HTTP_PORT/img" >"$T/out2"
same_bytes "$T/img" "$T/out2"
# Requests that stall (no byte for 1 s) are retried: two stalls, then the right bytes.
start_responder "$T/img" --stall-first 2
"$VOLTOOL" -v --timeout 1 cat -t 1 -r 2M "http://127.0.0.1:$HTTP_PORT/img" >"$T/out3" 2>"$T/log"
same_bytes "$T/img" "$T/out3"
[ "$(grep -c 'Operation too slow.*, retrying' "$T/log")" -eq 2 ] || fail "2 timeouts: $(cat "$T/log")"

# A server that goes away after open and comes back 5 s later (longer than the 5 retries'
# backoff): connection failures are retried for reconnect_wait, the read then succeeds.
requires lighttpd
mkdir -p "$T/www"
cp "$T/img" "$T/www/img"
start_lighttpd "$T/www"
lpid=$LIGHTTPD_PID
VOLTOOL_START_AFTER=$T/go "$VOLTOOL" -v read "http://127.0.0.1:$HTTP_PORT/img" 1000 100000 \
  >"$T/back.out" 2>"$T/back.err" &
rd=$!
sleep 0.3
kill "$lpid"
while kill -0 "$lpid" 2>/dev/null; do sleep 0.05; done
touch "$T/go"
sleep 5
lighttpd -D -f "$T/lighttpd.conf" 2>>"$T/lighttpd.log" &
track_pid $!
wait "$rd" || { cat "$T/back.err"; fail "the read did not wait for the server to come back"; }
cmp "$T/back.out" <(tail -c +1001 "$T/img" | head -c 100000) || fail "wrong bytes after the server came back"
n=$(grep -c "Couldn't connect\|Failed to connect.*retrying" "$T/back.err" || true)
[ "$n" -gt 5 ] || fail "expected more than 5 retries of a refused connection: $(cat "$T/back.err")"
echo "ok: a server back after 5 s: $n retries, the right bytes"
echo "http driver faults ok"
