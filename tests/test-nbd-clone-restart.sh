#!/usr/bin/env bash
# A clone server killed (kill -9) after acknowledging writes it had not yet flushed, then
# restarted on its map, still serves them: a client that reconnects (qemu's nbd
# reconnect-delay) and then flushes must not find them replaced by source data.  Regions
# marked but not committed survive in the map's marks file during the same boot of the host;
# after a reboot (FERRY_BOOT_ID stands in for another boot) only the committed map counts.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-nbd.sh"
requires nbdcopy
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"

head -c 4M /dev/urandom >"$T/src"
truncate -s 4M "$T/dest"
# Paused: nothing hydrates but what the client touches.
start_ferry_nbd "$T/sock" --paused --source "$T/src" --map "$T/map" "$T/dest"
/usr/bin/python3 - "$T/sock" "$NBD_PID" <<'PY'
import nbd, os, signal, sys, time
sock, pid = sys.argv[1], int(sys.argv[2])
h = nbd.NBD()
h.connect_unix(sock)
h.pwrite(b"\xab" * 4096, 65536 + 8192)      # partial write: region filled from the source
h.pwrite(b"\xcd" * 65536, 3 * 65536)        # whole region
os.kill(pid, signal.SIGKILL)                # acknowledged, never flushed
PY
wait "$NBD_PID" 2>/dev/null || true
start_ferry_nbd "$T/sock" --paused --source "$T/src" --map "$T/map" "$T/dest"
cp "$T/src" "$T/expect"
printf '\xab%.0s' $(seq 4096) | dd of="$T/expect" bs=1 seek=$((65536 + 8192)) conv=notrunc status=none
printf '\xcd%.0s' $(seq 65536) | dd of="$T/expect" bs=65536 seek=3 conv=notrunc status=none
nbdcopy "$NBD_URI" "$T/read"
same_bytes "$T/expect" "$T/read"
grep -q "2 regions marked by a process that ended before committing them" "$T/ferry-nbd.log" ||
  fail "no message about the recovered marks"
stop_ferry_nbd
[ ! -e "$T/map.marks" ] || fail "marks file left after a clean stop"

# Another boot of the host: unflushed marks are not trusted (their data may be lost too).
# (A new map over the destination the first part wrote: --new-map says its content may go.)
start_ferry_nbd "$T/sock" --paused --new-map --source "$T/src" --map "$T/map2" "$T/dest"
/usr/bin/python3 - "$T/sock" "$NBD_PID" <<'PY'
import nbd, os, signal, sys
h = nbd.NBD()
h.connect_unix(sys.argv[1])
h.pwrite(b"\xee" * 65536, 0)
os.kill(int(sys.argv[2]), signal.SIGKILL)
PY
wait "$NBD_PID" 2>/dev/null || true
FERRY_BOOT_ID=another-boot start_ferry_nbd "$T/sock" --paused --source "$T/src" --map "$T/map2" "$T/dest"
nbdcopy "$NBD_URI" "$T/read2"
cmp -n 65536 "$T/read2" "$T/src" || fail "after a reboot an unflushed mark was trusted"
stop_ferry_nbd
echo "ok: acknowledged writes survive a killed clone server"
