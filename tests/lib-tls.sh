# TLS credentials for tests (source after functions.sh), made with certtool/psktool
# (gnutls-bin) into $T/tls, in the directory layouts nbdkit, qemu and libnbd use:
#
#   $T/tls/server/   ca-cert.pem server-cert.pem server-key.pem   (ferry-nbd --tls-certificates,
#                    qemu-nbd tls-creds-x509 endpoint=server; the CA makes client certs required)
#   $T/tls/client/   ca-cert.pem client-cert.pem client-key.pem   (libnbd tls-certificates=,
#                    qemu-img tls-creds-x509 endpoint=client)
#   $T/tls/anon/     server-cert.pem server-key.pem               (no CA: clients not verified)
#   $T/tls/cacert/   ca-cert.pem only                             (a client without a certificate)
#   $T/tls/wrongca/  a client of another CA (it trusts neither side)
#   $T/tls/expired-server/  a server whose certificate expired in 2020
#   $T/tls/expired-client/  a client whose certificate expired in 2020
#   $T/tls/keys.psk  PSK user "alice";  $T/tls/wrong.psk  alice with another key
#
# The server certificate names localhost, 127.0.0.1 and the two-host link's 10.77.0.1.

_cert() { # _cert NAME TEMPLATE_LINES... : key + certificate signed by $ca
  local dir=$1 name=$2; shift 2
  certtool --generate-privkey --key-type=ecdsa --outfile "$dir/$name-key.pem" 2>/dev/null
  printf '%s\n' "$@" >"$T/tls/$name.info"
  certtool --generate-certificate --load-ca-certificate "$CA_CERT" --load-ca-privkey "$CA_KEY" \
    --load-privkey "$dir/$name-key.pem" --template "$T/tls/$name.info" \
    --outfile "$dir/$name-cert.pem" 2>/dev/null
}

_ca() { # _ca DIR: a self-signed CA in DIR/ca-cert.pem (key beside it, not in a served dir)
  certtool --generate-privkey --key-type=ecdsa --outfile "$1.ca-key.pem" 2>/dev/null
  printf 'cn = ferry test CA %s\nca\ncert_signing_key\nexpiration_days = 3\n' "$1" >"$1.ca.info"
  certtool --generate-self-signed --load-privkey "$1.ca-key.pem" --template "$1.ca.info" \
    --outfile "$1.ca-cert.pem" 2>/dev/null
  CA_CERT=$1.ca-cert.pem
  CA_KEY=$1.ca-key.pem
}

make_tls() {
  requires certtool psktool
  local d=$T/tls
  mkdir -p "$d"/{server,client,anon,cacert,wrongca,expired-server,expired-client}
  local server=("organization = ferry tests" "cn = localhost" "dns_name = localhost"
    "ip_address = 127.0.0.1" "ip_address = 10.77.0.1" tls_www_server encryption_key signing_key)
  local client=("cn = ferry test client" tls_www_client encryption_key signing_key)
  local expired=('activation_date = "2019-01-01 00:00:00"' 'expiration_date = "2020-01-01 00:00:00"')
  _ca "$d/main"
  cp "$CA_CERT" "$d/server/ca-cert.pem"
  cp "$CA_CERT" "$d/client/ca-cert.pem"
  cp "$CA_CERT" "$d/cacert/ca-cert.pem"
  cp "$CA_CERT" "$d/expired-client/ca-cert.pem"
  cp "$CA_CERT" "$d/expired-server/ca-cert.pem"
  _cert "$d/server" server "${server[@]}" "expiration_days = 3"
  cp "$d/server/server-cert.pem" "$d/server/server-key.pem" "$d/anon/"
  _cert "$d/client" client "${client[@]}" "expiration_days = 3"
  _cert "$d/expired-server" server "${server[@]}" "${expired[@]}"
  _cert "$d/expired-client" client "${client[@]}" "${expired[@]}"
  _ca "$d/other"
  cp "$CA_CERT" "$d/wrongca/ca-cert.pem"
  _cert "$d/wrongca" client "${client[@]}" "expiration_days = 3"
  [ -s "$d/server/server-cert.pem" ] && [ -s "$d/expired-server/server-cert.pem" ] &&
    [ -s "$d/wrongca/client-cert.pem" ] || fail "certtool did not make the test certificates"
  psktool -u alice -p "$d/keys.psk" >/dev/null 2>&1
  psktool -u alice -p "$d/wrong.psk" >/dev/null 2>&1
  [ -s "$d/keys.psk" ] && ! cmp -s "$d/keys.psk" "$d/wrong.psk" || fail "psktool did not make keys"
  TLS=$d
}
