#!/usr/bin/env bash
# The nbd volume driver reads: whole volumes byte for byte with many requests in flight
# (nbdkit and qemu-nbd, unix socket and TCP), extents equal to nbdinfo --map, capabilities,
# real concurrency (delayed server: parallel reads must overlap), and the plain connections
# (simple replies) beside the one with structured replies.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-drivers.sh"
requires nbdkit nbdinfo nbdcopy qemu-nbd

# nbdkit sparse-random over a unix socket: data, holes and zeroes.
start_nbdkit "$T/sr.sock" sparse-random size=64M seed=7 percent=30 runlength=65536
U="nbd+unix:///?socket=$T/sr.sock"
nbdcopy "$U" "$T/ref"
"$VOLTOOL" cat -t 16 -r 256K "$U" >"$T/out"
same_bytes "$T/ref" "$T/out"
"$VOLTOOL" info "$U" >"$T/info"
grep -qx 'size: 67108864' "$T/info" || fail "size: $(cat "$T/info")"
grep -qx 'driver: nbd' "$T/info" || fail "driver"
grep -q '^caps:.* extents' "$T/info" || fail "no extents cap: $(cat "$T/info")"
"$VOLTOOL" extents "$U" >"$T/map.ours"
nbd_map "$U" >"$T/map.nbdinfo"
[ "$(wc -l <"$T/map.ours")" -gt 10 ] || fail "too few extents: $(cat "$T/map.ours")"
diff "$T/map.nbdinfo" "$T/map.ours" || fail "extents differ from nbdinfo --map"
# A sub-range: first extent starts at the offset asked.
"$VOLTOOL" extents "$U" 1000 100000 | head -1 | grep -q '^1000 ' || fail "extents at 1000"
# Odd offsets and lengths.
"$VOLTOOL" read "$U" 12345 777777 >"$T/piece"
dd if="$T/ref" of="$T/piece.ref" iflag=skip_bytes,count_bytes skip=12345 count=777777 bs=1M \
  status=none
same_bytes "$T/piece.ref" "$T/piece"

# Plain connections (backends/nbd.c): of four, only the first negotiates structured replies
# (and the meta context); reads over all four are right, block status still works.
nbdkit --exit-with-parent -v -U "$T/v.sock" -P "$T/v.pid" sparse-random size=64M seed=7 \
  percent=30 runlength=65536 2>"$T/v.log" &
track_pid $!
wait_for_pidfile "$T/v.pid" >/dev/null
wait_for_file "$T/v.sock"
V="nbd+unix:///?socket=$T/v.sock"
"$VOLTOOL" -c 4 -t 16 -r 64K cat "$V" >"$T/out.plain"
same_bytes "$T/ref" "$T/out.plain"
"$VOLTOOL" -c 4 extents "$V" >"$T/map.plain"
diff "$T/map.nbdinfo" "$T/map.plain" || fail "extents over plain connections differ"
n=$(grep -c 'client requested structured replies' "$T/v.log")
[ "$n" -eq 2 ] || fail "$n connections asked for structured replies, expected 1 per volume (2)"
[ "$(grep -c 'NBD_OPT_GO' "$T/v.log")" -ge 8 ] || fail "not 4 connections per volume"

# Multi-conn: nbdkit memory advertises it; the driver opens the connections asked.
PORT=$(free_port)
head -c 8M /dev/urandom >"$T/rand"
nbdkit_tcp "$PORT" memory size=8M
nbdcopy "$T/rand" "nbd://127.0.0.1:$PORT/"
"$VOLTOOL" -v -c 3 cat "nbd://127.0.0.1:$PORT/" >"$T/out2" 2>"$T/log"
same_bytes "$T/rand" "$T/out2"
grep -q '3 connection(s) (multi-conn)' "$T/log" || fail "not 3 connections: $(cat "$T/log")"

# qemu-nbd (raw file, unix socket and TCP): a second server implementation.
head -c 24M /dev/urandom >"$T/q.raw"
truncate -s 40M "$T/q.raw" # a hole at the end
start_qemu_nbd "$T/q.sock" -f raw "$T/q.raw"
"$VOLTOOL" cat -t 8 "nbd+unix:///?socket=$T/q.sock" >"$T/qout"
same_bytes "$T/q.raw" "$T/qout"
"$VOLTOOL" extents "nbd+unix:///?socket=$T/q.sock" >"$T/qmap.ours"
diff <(nbd_map "nbd+unix:///?socket=$T/q.sock") "$T/qmap.ours" || fail "qemu-nbd extents"
QPORT=$(free_port)
qemu-nbd -r -b 127.0.0.1 -p "$QPORT" --pid-file="$T/q2.pid" -t -f raw "$T/q.raw" &
track_pid $!
wait_for_port "$QPORT"
"$VOLTOOL" cat -t 8 "nbd://127.0.0.1:$QPORT/" >"$T/qout2"
same_bytes "$T/q.raw" "$T/qout2"

# Concurrency: each read takes 100 ms at the server; 64 reads by 16 threads over ONE
# connection take ~0.4 s when they overlap, 6.4 s when serialised.
start_nbdkit "$T/slow.sock" --filter=delay memory size=4M rdelay=100ms
ms=$(elapsed_ms "$T/slow" "$VOLTOOL" -c 1 cat -t 16 -r 64K "nbd+unix:///?socket=$T/slow.sock")
echo "64 delayed reads on one connection: $ms ms"
[ "$ms" -lt 3000 ] || fail "reads did not overlap ($ms ms)"
cmp -n 4194304 "$T/slow" /dev/zero || fail "slow volume not zero"
# Block status is asked 1 GiB at a time: the second answer merges into the first extent
# (contiguous, same flags), which is not "no extents" (it was refused as bad block status).
start_nbdkit "$T/big.sock" memory size=3G
[ "$("$VOLTOOL" extents "nbd+unix:///?socket=$T/big.sock")" = "0 3221225472 3" ] ||
  fail "extents of a 3 GiB hole: $("$VOLTOOL" extents "nbd+unix:///?socket=$T/big.sock" 2>&1)"
echo "nbd driver reads ok"
