#!/usr/bin/env bash
# fio's nbd engine against ferry-nbd: random writes at queue depth 16 with crc32c
# verification of every block, over TCP and a unix socket.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires fio
fio --enghelp 2>/dev/null | grep -qw nbd || skip "fio lacks the nbd engine"

truncate -s 32M "$T/disk"
start_ferry_nbd "$T/sock" "$T/disk"
run_fio() { # URI NAME
  fio --name="$2" --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --size=16M \
    --iodepth=16 --verify=crc32c --verify_fatal=1 --do_verify=1 --output="$T/$2.out" \
    || { cat "$T/$2.out"; fail "fio $2"; }
  grep -q 'err= 0' "$T/$2.out" || { cat "$T/$2.out"; fail "fio $2 reported errors"; }
}
run_fio "$NBD_URI" unix
# Mixed block sizes and reads too.
fio --name=mixed --ioengine=nbd --uri="$NBD_URI" --rw=randrw --bsrange=512-128k --size=8M \
  --offset=16M --iodepth=8 --verify=crc32c --verify_fatal=1 --output="$T/mixed.out" \
  || { cat "$T/mixed.out"; fail "fio mixed"; }
stop_ferry_nbd

port=$(free_port)
"$FERRY_NBD" --listen "127.0.0.1:$port" --pidfile "$T/tcp.pid" "$T/disk"
track_pid "$(cat "$T/tcp.pid")"
run_fio "nbd://127.0.0.1:$port/" tcp
echo "fio ok"
