#!/usr/bin/env bash
# Daemonizing: ferry-nbd returns once it is listening (a client can connect at once, no
# waiting), writes its pidfile, serves TCP on IPv4 and IPv6; SIGTERM ends it cleanly,
# removing the pidfile and socket; --max-clients refuses the extra client only.
. "$TESTS_DIR/functions.sh"
requires nbdinfo nbdcopy
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"

head -c 4M /dev/urandom >"$T/disk"
port=$(free_port)
"$FERRY_NBD" --listen "127.0.0.1:$port" --socket "$T/sock" --pidfile "$T/pid" \
  --max-clients 2 "$T/disk"
pid=$(cat "$T/pid")  # no wait: the pidfile exists once ferry-nbd has returned
track_pid "$pid"
kill -0 "$pid" || fail "daemon not running"
[ "$(ps -o ppid= -p "$pid" | tr -d ' ')" != "$$" ] || fail "not detached from the shell"
nbdinfo --size "nbd://127.0.0.1:$port" | grep -qx 4194304 || fail "TCP"
nbdinfo --size "nbd+unix:///?socket=$T/sock" | grep -qx 4194304 || fail "unix"
nbdcopy "nbd://127.0.0.1:$port" "$T/back"
same_bytes "$T/disk" "$T/back"

# IPv6 loopback, when the machine has it.
if /usr/bin/python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null; then
  p6=$(free_port)
  "$FERRY_NBD" --listen "[::1]:$p6" --pidfile "$T/pid6" --read-only "$T/disk"
  track_pid "$(cat "$T/pid6")"
  nbdinfo --size "nbd://[::1]:$p6" | grep -qx 4194304 || fail "IPv6"
  kill "$(cat "$T/pid6")"
fi

# --max-clients 2: two held connections, the third is turned away, the first two still work.
/usr/bin/python3 - <<PY &
import nbd, os, time
h = nbd.NBD(); h.connect_uri("nbd+unix:///?socket=$T/sock")
h2 = nbd.NBD(); h2.connect_uri("nbd+unix:///?socket=$T/sock")
open("$T/held", "w").close()
while not os.path.exists("$T/release"):
    time.sleep(0.05)
assert h.pread(4096, 0) == h2.pread(4096, 0)
PY
holder=$!
wait_for_file "$T/held"
if nbdinfo --size "nbd+unix:///?socket=$T/sock" 2>"$T/err"; then fail "third client accepted"; fi
touch "$T/release"
wait "$holder" || fail "held clients broke"
nbdinfo --size "nbd+unix:///?socket=$T/sock" >/dev/null || fail "slot not freed"

# SIGTERM: exits, removes pidfile and socket.
kill -TERM "$pid"
for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$pid" 2>/dev/null && fail "still running after SIGTERM"
[ ! -e "$T/pid" ] || fail "pidfile left behind"
[ ! -e "$T/sock" ] || fail "socket left behind"
echo "daemon ok"
