#!/usr/bin/env bash
# NBD over TLS between ferry and the real peers (issue 13, item 2), on 127.0.0.1:
#   ferry-nbd --tls-certificates  <- nbdinfo, qemu-img (tls-creds-x509), ferry's nbd driver;
#   qemu-nbd --object tls-creds-x509 and nbdkit --tls -> ferry's nbd driver (nbds://);
#   PSK (psktool keys) both ways.
# Refusals are clear and serve nothing: a wrong CA, no client certificate, an expired
# client or server certificate, a wrong PSK, a plaintext client of --tls=require.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-tls.sh"
requires nbdinfo qemu-nbd qemu-img nbdkit
make_tls
head -c 8M /dev/urandom >"$T/img"

# start_tls_nbd PORT ARGS...: ferry-nbd on 127.0.0.1:PORT (pidfile = ready).
start_tls_nbd() {
  local port=$1; shift
  local pidf="$T/ferry-nbd.$port.pid"
  "$FERRY_NBD" --foreground --listen "127.0.0.1:$port" --pidfile "$pidf" "$@" \
    2>>"$T/ferry-nbd.$port.log" &
  track_pid $!
  wait_for_pidfile "$pidf" >/dev/null
}
# refused WHAT CMD...: CMD fails; its stderr is kept in $T/err.
refused() {
  local what=$1; shift
  if "$@" >"$T/out" 2>"$T/err"; then fail "$what: accepted: $(cat "$T/out")"; fi
  [ ! -s "$T/out" ] || [ "$(cat "$T/out")" = "" ] || fail "$what: something was served: $(cat "$T/out")"
  echo "ok: $what refused: $(head -1 "$T/err")"
}

# --- ferry-nbd with X.509 certificates, client certificates required -------------------
P1=$(free_port)
start_tls_nbd "$P1" --tls-certificates "$TLS/server" -r "$T/img"
U1="nbds://localhost:$P1/"
# The acceptance line: nbdinfo with the right CA works, with a wrong CA it is refused.
[ "$(nbdinfo --size "$U1?tls-certificates=$TLS/client")" = 8388608 ] || fail "nbdinfo over TLS"
nbdinfo "$U1?tls-certificates=$TLS/client" | grep -q "with TLS" || fail "nbdinfo: not TLS"
echo "ok: nbdinfo $U1 with the right CA"
refused "nbdinfo with a wrong CA" nbdinfo --size "$U1?tls-certificates=$TLS/wrongca"
grep -q "certificate verification" "$T/err" || fail "wrong CA: $(cat "$T/err")"
refused "a client without a certificate" nbdinfo --size "$U1?tls-certificates=$TLS/cacert"
refused "an expired client certificate" nbdinfo --size "$U1?tls-certificates=$TLS/expired-client"
refused "a plaintext client of --tls=require" nbdinfo --size "nbd://localhost:$P1/"
grep -q "requires TLS\|TLS encryption first" "$T/err" || fail "plaintext refusal: $(cat "$T/err")"
log="$T/ferry-nbd.$P1.log"
grep -q "the client sent no certificate" "$log" || fail "server log: no-certificate refusal: $(cat "$log")"
grep -q "client certificate refused: .*expired" "$log" || fail "server log: expired: $(cat "$log")"
grep -q "the client closed the connection during the handshake" "$log" ||
  fail "server log: wrong CA: $(cat "$log")"
# qemu-img and ferry's own driver read the exact bytes.
qemu-img convert -O raw --object "tls-creds-x509,id=tls0,dir=$TLS/client,endpoint=client" \
  --image-opts "driver=nbd,host=localhost,port=$P1,tls-creds=tls0" "$T/qemu.out"
same_bytes "$T/img" "$T/qemu.out"
echo "ok: qemu-img convert over TLS"
"$VOLTOOL" cat "$U1?tls-certificates=$TLS/client" >"$T/volt.out"
same_bytes "$T/img" "$T/volt.out"
echo "ok: ferry's nbd driver over TLS"
expect_fail "tls-certificates=$TLS/nope" "$VOLTOOL" info "$U1?tls-certificates=$TLS/nope"
expect_fail "TLS parameters need an nbds:// or nbds+unix:// URI" \
  "$VOLTOOL" info "nbd://localhost:$P1/?tls-certificates=$TLS/client"

# A server whose own certificate expired does not start.
expect_fail "server-cert.pem: the server certificate expired on 2020-01-01" \
  "$FERRY_NBD" --foreground --listen "127.0.0.1:$(free_port)" --tls-certificates "$TLS/expired-server" "$T/img"

# --tls=on: TLS offered, plaintext allowed (and no CA: clients are not verified).
P2=$(free_port)
start_tls_nbd "$P2" --tls on --tls-certificates "$TLS/anon" -r "$T/img"
[ "$(nbdinfo --size "nbd://localhost:$P2/")" = 8388608 ] || fail "--tls=on: plaintext"
[ "$(nbdinfo --size "nbds://localhost:$P2/?tls-certificates=$TLS/cacert")" = 8388608 ] ||
  fail "--tls=on: TLS without a client certificate"
echo "ok: --tls=on serves plaintext and TLS clients"

# --- qemu-nbd and nbdkit as TLS servers, ferry's nbd driver as the client --------------
P3=$(free_port)
qemu-nbd -f raw -r -t --bind 127.0.0.1 -p "$P3" --pid-file "$T/qemu-nbd.pid" \
  --object "tls-creds-x509,id=tls0,dir=$TLS/server,endpoint=server" --tls-creds tls0 \
  "$T/img" 2>"$T/qemu-nbd.log" &
track_pid $!
wait_for_pidfile "$T/qemu-nbd.pid" >/dev/null
"$VOLTOOL" cat "nbds://localhost:$P3/?tls-certificates=$TLS/client" >"$T/qn.out"
same_bytes "$T/img" "$T/qn.out"
echo "ok: ferry's nbd driver reads qemu-nbd over TLS"
refused "qemu-nbd, a client with a wrong CA" "$VOLTOOL" info "nbds://localhost:$P3/?tls-certificates=$TLS/wrongca"
grep -q "certificate verification" "$T/err" || fail "message: $(cat "$T/err")"

# nbdkit serves an expired certificate (it does not check its own): ferry refuses it.
P4=$(free_port)
nbdkit --exit-with-parent -i 127.0.0.1 -p "$P4" -P "$T/nbdkit-exp.pid" --tls=require \
  --tls-certificates="$TLS/expired-server" file "$T/img" 2>"$T/nbdkit-exp.log" &
track_pid $!
wait_for_pidfile "$T/nbdkit-exp.pid" >/dev/null
refused "an expired server certificate" "$VOLTOOL" info "nbds://localhost:$P4/?tls-certificates=$TLS/client"
grep -q "certificate verification" "$T/err" || fail "message: $(cat "$T/err")"

# --- PSK ----------------------------------------------------------------------------------
P5=$(free_port)
start_tls_nbd "$P5" --tls-psk "$TLS/keys.psk" -r "$T/img"
[ "$(nbdinfo --size "nbds://alice@localhost:$P5/?tls-psk-file=$TLS/keys.psk")" = 8388608 ] ||
  fail "nbdinfo with PSK"
"$VOLTOOL" read "nbds://localhost:$P5/?tls-psk-file=$TLS/keys.psk&tls-username=alice" 0 8388608 >"$T/psk.out"
same_bytes "$T/img" "$T/psk.out"
echo "ok: PSK (nbdinfo, ferry's driver with tls-username=)"
refused "a wrong PSK" nbdinfo --size "nbds://alice@localhost:$P5/?tls-psk-file=$TLS/wrong.psk"
refused "a wrong PSK (ferry's driver)" \
  "$VOLTOOL" info "nbds://localhost:$P5/?tls-psk-file=$TLS/wrong.psk&tls-username=alice"
grep -q "pre-shared key does not match" "$T/ferry-nbd.$P5.log" ||
  fail "server log: wrong PSK: $(cat "$T/ferry-nbd.$P5.log")"
expect_fail "no keys in the file" "$FERRY_NBD" --foreground --listen "127.0.0.1:$(free_port)" \
  --tls-psk /dev/null "$T/img"

P6=$(free_port)
nbdkit --exit-with-parent -i 127.0.0.1 -p "$P6" -P "$T/nbdkit-psk.pid" --tls=require \
  --tls-psk="$TLS/keys.psk" file "$T/img" 2>"$T/nbdkit-psk.log" &
track_pid $!
wait_for_pidfile "$T/nbdkit-psk.pid" >/dev/null
"$VOLTOOL" cat "nbds://alice@localhost:$P6/?tls-psk-file=$TLS/keys.psk" >"$T/nk.out"
same_bytes "$T/img" "$T/nk.out"
echo "ok: ferry's nbd driver reads nbdkit with PSK"
echo "tls interop ok"
