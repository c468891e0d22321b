#!/usr/bin/env bash
# https through the http driver: lighttpd with a self-signed certificate is refused (the
# certificate is verified), and read byte for byte once its CA is given in CURL_CA_BUNDLE.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
requires lighttpd openssl
found=
for m in /usr/lib/lighttpd/mod_openssl.so /usr/lib/*/lighttpd/mod_openssl.so; do
  [ -e "$m" ] && found=$m
done
[ -n "$found" ] || skip "lighttpd without mod_openssl"

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/key.pem" -out "$T/cert.pem" -days 1 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null || fail "openssl"
cat "$T/cert.pem" "$T/key.pem" >"$T/server.pem"
mkdir "$T/www"
head -c 5M /dev/urandom >"$T/www/disk.img"
PORT=$(free_port)
cat >"$T/lighttpd-tls.conf" <<CONF
server.modules += ("mod_openssl")
server.document-root = "$T/www"
server.bind = "127.0.0.1"
server.port = $PORT
server.errorlog = "$T/lighttpd.log"
ssl.engine = "enable"
ssl.pemfile = "$T/server.pem"
CONF
lighttpd -D -f "$T/lighttpd-tls.conf" 2>>"$T/lighttpd.log" &
track_pid $!
wait_for_port "$PORT"
URL="https://127.0.0.1:$PORT/disk.img"

CURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt expect_fail \
  "$URL: SSL certificate problem: self-signed certificate" "$VOLTOOL" info "$URL"
! grep -q "gave up" "$T/err" || fail "a certificate failure was retried"
CURL_CA_BUNDLE="$T/cert.pem" "$VOLTOOL" cat -t 8 -r 256K "$URL" >"$T/out"
same_bytes "$T/www/disk.img" "$T/out"
echo "http driver tls ok"
