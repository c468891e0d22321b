#!/usr/bin/env bash
# End to end through the http driver: `ferry copy http://...` from lighttpd equals the source
# with zero runs as holes; from a server that fails its first requests with 503 the copy
# retries to a correct result; from a server that ignores Range it is refused, nothing written.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
. "$TESTS_DIR/lib-copy.sh"
requires lighttpd

mkdir "$T/www"
make_image "$T/www/src.img" 16
start_lighttpd "$T/www"
"$FERRY" copy "http://127.0.0.1:$HTTP_PORT/src.img" "$T/out.img"
same_bytes "$T/www/src.img" "$T/out.img"
check_holes "$T/out.img" "$T/www/src.img.map" || fail "zero runs are not holes in out.img"

start_responder "$T/www/src.img" --fail-first 4
"$FERRY" copy "http://127.0.0.1:$HTTP_PORT/src.img" "$T/out2.img"
same_bytes "$T/www/src.img" "$T/out2.img"

start_responder "$T/www/src.img" --mode norange
expect_fail "server does not support Range requests" \
  "$FERRY" copy "http://127.0.0.1:$HTTP_PORT/src.img" "$T/out3.img"
[ ! -e "$T/out3.img" ] || fail "destination created although the source was refused"
echo "http driver copy ok"
