#!/usr/bin/env bash
# The ferry TM driver with FERRY_TRANSPORT=tls: the cold migration's mv exports the disk with
# ferry-nbd --tls require on a TCP port of FERRY_TLS_PORTS, and the destination's clone reads
# it as nbds:// with its client certificate; ssh carries only the control socket (the keeper
# has no -R forward).  A client without a certificate is refused by the export; the clone
# converges byte-exact.  With a host whose certificates come from another CA the mv fails,
# with the handshake's reason, and the source VM directory is as it was.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-tls.sh"
. "$TESTS_DIR/lib-tm.sh"
requires nbdinfo
make_tls
tm_setup
tm_config FERRY_RATE 2M

# One directory per host as ferryrc's FERRY_TLS_DIR describes it (server and client halves).
mkdir -p "$T/hosttls" "$T/badtls"
cp "$TLS/server/"{ca-cert,server-cert,server-key}.pem "$TLS/client/"{client-cert,client-key}.pem "$T/hosttls/"
cp "$TLS/server/"{server-cert,server-key}.pem "$TLS/wrongca/"{ca-cert,client-cert,client-key}.pem "$T/badtls/"
port0=$((20000 + RANDOM % 30000)) # the export takes the first free one of 21
tm_config FERRY_TRANSPORT tls
tm_config FERRY_TLS_DIR "$T/hosttls"
tm_config FERRY_TLS_PORTS "$port0-$((port0 + 20))"
tm_config FERRY_TLS_LISTEN 127.0.0.1
tm_config FERRY_TLS_ADDRESS 127.0.0.1

tm_make_vm 60 256 8 200
before=$(tm_sha "$T/hosts/hostA/ds/0/60/disk.0")
tm_transfer_ok "MV.ferry ssh hostA:$DS/0/60/disk.0 hostB:$DS/0/60/disk.0 60 1" \
  "MV ferry hostA:$DS/0/60 hostB:$DS/0/60 60 0"
echo "mv over TLS returned in $TM_SECONDS s (figure, not asserted)"
d=$DS/0/60
uri=$(on_host hostB cat "$d/.ferry/disk.0/src.uri")
[[ $uri =~ ^nbds://127\.0\.0\.1:([0-9]+)/\?tls-certificates=$T/hosttls$ ]] ||
  fail "the clone's source is not the export's nbds:// URI: $uri"
port=${BASH_REMATCH[1]}
[ "$port" -ge "$port0" ] && [ "$port" -le $((port0 + 20)) ] || fail "port $port is outside FERRY_TLS_PORTS"
[ "$(on_host hostA cat "$T/hosts/hostA/ds/0/60/.ferry/export.0/port")" = "$port" ] ||
  fail "the export's port file does not say $port"
# The keeper's ssh carries no NBD forward; the export requires TLS.
keeper_ssh=$(pgrep -af -- "ControlPath=$DS/0/60/.ferry/export.0/mux.sock" | grep -v pgrep || true)
[ -n "$keeper_ssh" ] || fail "no keeper ssh connection for the export"
! grep -q -- " -R " <<<"$keeper_ssh" || fail "the keeper still forwards the NBD socket: $keeper_ssh"
if nbdinfo --size "nbd://127.0.0.1:$port" >"$T/plain.out" 2>&1; then
  fail "the export answered a client without TLS"
fi
nbdinfo --size "nbds://127.0.0.1:$port/?tls-certificates=$TLS/cacert" >"$T/nocert.out" 2>&1 &&
  fail "the export answered a TLS client without a certificate"
size=$(nbdinfo --size "nbds://127.0.0.1:$port/?tls-certificates=$T/hosttls")
[ "$size" = $((256 << 20)) ] || fail "nbdinfo over TLS with the hosts' certificate: size $size"
echo "ok: the export at $port requires TLS and a client certificate of the cloud's CA"

on_host hostB dd if="$d/disk.0" bs=1M count=8 status=none |
  cmp - <(head -c $((8 << 20)) "$T/hosts/hostA/ds/0/60/disk.0") || fail "reads through DST_PATH differ"
wait_plain hostB "$d/disk.0"
wait_gone hostB "$d/.ferry"
wait_gone hostA "$d"
[ "$(tm_sha "$T/hosts/hostB/ds/0/60/disk.0")" = "$before" ] || fail "the destination differs from the source"
tm_assert_clean
echo "ok: the clone over TLS converged byte-exact, the source went, nothing runs"

# Certificates of another CA on the hosts: the move is refused and nothing is lost.
tm_config FERRY_TLS_DIR "$T/badtls"
tm_make_vm 61 256 8 200
before=$(tm_sha "$T/hosts/hostA/ds/0/61/disk.0")
tm_transfer_fails "gnutls_handshake: Error in the certificate verification" "MV.ferry ssh hostA:$DS/0/61/disk.0 hostB:$DS/0/61/disk.0 61 1" \
  "MV ferry hostA:$DS/0/61 hostB:$DS/0/61 61 0"
grep -q "the VM's disks on hostA are as they were" "$T/tm.err" || fail "the message does not say the source is intact"
[ "$(tm_sha "$T/hosts/hostA/ds/0/61/disk.0")" = "$before" ] || fail "the source disk changed"
on_host hostA test -f "$DS/0/61/disk.1" -a -f "$DS/0/61/deployment.0" || fail "the source directory lost files"
on_host hostB test ! -e "$DS/0/61/disk.0" || fail "hostB has a disk.0 after the failed move"
tm_assert_clean
echo "ok: certificates of another CA: refused with the TLS handshake's reason, the source intact"

# A setting that cannot work is refused before anything starts.
tm_config FERRY_TLS_DIR "$T/hosttls"
tm_config FERRY_TLS_PORTS "10810"
tm_fails "FERRY_TLS_PORTS=10810: expected FIRST-LAST" mv "hostA:$DS/0/61/disk.0" "hostB:$DS/0/61/disk.0" 61 1
tm_config FERRY_TRANSPORT udp
tm_fails "FERRY_TRANSPORT=udp: expected ssh or tls" mv "hostA:$DS/0/61/disk.0" "hostB:$DS/0/61/disk.0" 61 1
[ "$(tm_sha "$T/hosts/hostA/ds/0/61/disk.0")" = "$before" ] || fail "the source disk changed"
echo "ok: bad FERRY_TRANSPORT and FERRY_TLS_PORTS are refused, nothing changed"
