#!/usr/bin/env bash
# The control socket of a real frontend: ferry-nbd serving a clone with --control.  A paused
# clone still serves reads (fetched on demand, counted in bytes_fetched), the NBD client is
# counted, resume + wait converge, the data equals the source, and the socket goes at exit.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-control.sh"
requires nbdkit nbdcopy
[ -x "$FERRY_NBD" ] || skip "ferry-nbd not built"

S=$T/ctl.sock
start_nbdkit "$T/src.sock" pattern size=32M
truncate -s 32M "$T/dest.img"
# One worker at 64 KiB/s: its first 4 MiB request goes out at once, the next not for a minute,
# so the region read below (at 16 MiB) is certainly still on the source only.
"$FERRY_NBD" --socket "$T/nbd.sock" --control "$S" --pidfile "$T/nbd.pid" --workers 1 --rate 64K \
  --source "nbd+unix:///?socket=$T/src.sock" --map "$T/map.bin" "$T/dest.img"
track_pid "$(wait_for_pidfile "$T/nbd.pid")"

"$FERRY" pause "$S" | grep -qF "$S: state paused" || fail "pause"
# Let the request in flight at the pause land: then nothing moves.
h0=-1 h1=$(status_field "$S" regions_hydrated)
while [ "$h0" != "$h1" ]; do sleep 0.3; h0=$h1 h1=$(status_field "$S" regions_hydrated); done
st=$("$FERRY" status --json "$S")
for kv in program=ferry-nbd size=33554432 regions_total=512 clients=0 state=paused \
          rate_limit=65536; do
  [ "$(json_field "$st" "${kv%%=*}")" = "${kv#*=}" ] || fail "status ${kv%%=*}: $st"
done

# While paused, an NBD client reads 1 MiB: fetched on demand, and the client is counted.
/usr/bin/python3 - "$T/nbd.sock" "$S" "$FERRY" "$h1" <<'PY' || fail "on-demand read"
import json, struct, subprocess, sys
import nbd
sock, ctl, ferry = sys.argv[1:4]
hydrated_before = int(sys.argv[4])
def status():
    return json.loads(subprocess.run([ferry, "status", "--json", ctl], check=True,
                                     capture_output=True).stdout)
fetched_before = status()["bytes_fetched"]
h = nbd.NBD()
h.connect_uri("nbd+unix:///?socket=" + sock)
buf = h.pread(1 << 20, 16 << 20)
# nbdkit's pattern plugin: each 8-byte word holds its own offset, big-endian.
want = b"".join(struct.pack(">Q", o) for o in range(16 << 20, 17 << 20, 8))
assert buf == want, "bytes read through ferry-nbd differ from the source"
st = status()
assert st["clients"] == 1, st
assert st["bytes_fetched"] - fetched_before == 1 << 20, st
assert st["regions_hydrated"] - hydrated_before == 16, st
assert st["state"] == "paused", st
h.shutdown()
PY

"$FERRY" resume "$S" >/dev/null
"$FERRY" set-rate "$S" 0 >/dev/null
"$FERRY" wait --timeout 60 "$S" | grep -qx "$S: converged" || fail "ferry wait"
st=$("$FERRY" status --json "$S")
[ "$(json_field "$st" regions_hydrated)" = 512 ] || fail "not all regions: $st"
[ "$(json_field "$st" clients)" = 0 ] || fail "client still counted: $st"
nbdcopy "nbd+unix:///?socket=$T/src.sock" "$T/src.img"
same_bytes "$T/src.img" "$T/dest.img"

pid=$(cat "$T/nbd.pid")
kill "$pid"
for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
[ ! -e "$S" ] || fail "control socket left behind by ferry-nbd"
expect_fail "$S: no such control socket" "$FERRY" status "$S"
echo "ferry-nbd control ok"
