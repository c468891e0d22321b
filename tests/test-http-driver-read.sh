#!/usr/bin/env bash
# The http volume driver against lighttpd: size from HEAD, whole image read by many ranged
# requests in parallel equals the file, odd ranges, 404 / refused connection / bad URL /
# writes refused with messages naming the problem.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
requires lighttpd

mkdir "$T/www"
head -c 24M /dev/urandom >"$T/www/disk.img"
head -c 12345 /dev/urandom >>"$T/www/disk.img" # an odd tail
start_lighttpd "$T/www"
URL="http://127.0.0.1:$HTTP_PORT/disk.img"

"$VOLTOOL" info "$URL" >"$T/info"
grep -qx "size: $((24 * 1048576 + 12345))" "$T/info" || fail "size: $(cat "$T/info")"
grep -qx 'driver: http' "$T/info" || fail "driver"
grep -qx 'caps: multi_conn' "$T/info" || fail "an http volume has no write/zero/trim/extents caps"
"$VOLTOOL" -c 4 cat -t 16 -r 512K "$URL" >"$T/out"
same_bytes "$T/www/disk.img" "$T/out"
"$VOLTOOL" -c 1 cat -t 4 -r 3M "$URL" >"$T/out1"
same_bytes "$T/www/disk.img" "$T/out1"
"$VOLTOOL" read "$URL" 1000001 99999 >"$T/piece"
dd if="$T/www/disk.img" of="$T/piece.ref" iflag=skip_bytes,count_bytes skip=1000001 count=99999 \
  bs=1M status=none
same_bytes "$T/piece.ref" "$T/piece"
# Extents: not supported, so one data extent covering everything.
[ "$("$VOLTOOL" extents "$URL")" = "0 $((24 * 1048576 + 12345)) 0" ] || fail "extents"

expect_fail "http://127.0.0.1:$HTTP_PORT/missing.img: HTTP 404 Not Found" \
  "$VOLTOOL" info "http://127.0.0.1:$HTTP_PORT/missing.img"
expect_fail "$URL: write refused: the volume is read-only" "$VOLTOOL" write "$URL" 0 </dev/null
expect_fail "$URL: write zeroes refused: the volume is read-only" "$VOLTOOL" zero "$URL" 0 1
expect_fail "http:///disk.img: HTTP URL lacks a host" "$VOLTOOL" info "http:///disk.img"
PORT=$(free_port)
expect_fail "http://127.0.0.1:$PORT/x: Failed to connect to 127.0.0.1 port $PORT" \
  "$VOLTOOL" --retries 1 info "http://127.0.0.1:$PORT/x"
grep -qF "(gave up after 2 attempts)" "$T/err" || fail "no retry count: $(cat "$T/err")"
# Passwords never appear in messages.
expect_fail "http://u:***@127.0.0.1:$HTTP_PORT/missing.img: HTTP 404 Not Found" \
  "$VOLTOOL" info "http://u:secret@127.0.0.1:$HTTP_PORT/missing.img"
! grep -q secret "$T/err" || fail "password leaked"
echo "http driver reads ok"
