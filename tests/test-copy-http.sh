#!/usr/bin/env bash
# ferry copy from an HTTP URL served by lighttpd (Range requests): byte-equal, and although
# HTTP reports no extents, zero blocks in what was read become holes, not data writes.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-copy.sh"
requires lighttpd curl

mkdir "$T/www"
make_image "$T/www/src.img" 24
read -r _ want_zeroed < <(expected_counts "$T/www/src.img.map")
size=$(stat -c %s "$T/www/src.img")

port=$(free_port)
cat >"$T/lighttpd.conf" <<CONF
server.document-root = "$T/www"
server.bind = "127.0.0.1"
server.port = $port
server.errorlog = "$T/lighttpd.log"
CONF
lighttpd -D -f "$T/lighttpd.conf" &
track_pid $!
for _ in $(seq 200); do curl -sfI "http://127.0.0.1:$port/src.img" >/dev/null && break; sleep 0.05; done
URL="http://127.0.0.1:$port/src.img"

"$FERRY" copy --json --connections 4 "$URL" "$T/out.img" >"$T/summary.json"
same_bytes "$T/www/src.img" "$T/out.img"
check_holes "$T/out.img" "$T/www/src.img.map" || fail "zero blocks were written as data"
[ "$(json_field "$T/summary.json" bytes_read)" = "$size" ] || fail "bytes_read"
[ "$(json_field "$T/summary.json" bytes_zeroed)" = "$want_zeroed" ] || fail "bytes_zeroed"

# A missing URL: refused with the URL named, nothing created.
expect_rc 1 "http://127.0.0.1:$port/nosuch.img" "$FERRY" copy "http://127.0.0.1:$port/nosuch.img" "$T/new.img"
[ ! -e "$T/new.img" ] || fail "404 source created new.img"
echo "http copy ok"
