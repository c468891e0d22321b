#!/usr/bin/env bash
# systemd socket activation: ferry-nbd serves the sockets it is handed in LISTEN_FDS (via
# systemd-socket-activate when installed, and always via a tiny launcher), stays in the
# foreground, and refuses --socket on top of them.
. "$TESTS_DIR/functions.sh"
requires nbdinfo nbdcopy

head -c 2M /dev/urandom >"$T/disk"

# launcher SOCKET ARGS...: listen on SOCKET, exec ARGS with it as fd 3 (LISTEN_FDS=1).
cat >"$T/launch.py" <<'PY'
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(16)
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # do not hold the caller's $(...) open
    if s.fileno() != 3:
        os.dup2(s.fileno(), 3)
    os.set_inheritable(3, True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.argv[2], sys.argv[2:])
print(pid, flush=True)
PY
pid=$(/usr/bin/python3 "$T/launch.py" "$T/sock" "$FERRY_NBD" --pidfile "$T/pid" "$T/disk")
track_pid "$pid"
[ "$(wait_for_pidfile "$T/pid")" = "$pid" ] || fail "activated server did not stay in the foreground"
nbdcopy "nbd+unix:///?socket=$T/sock" "$T/back"
same_bytes "$T/disk" "$T/back"
kill -TERM "$pid"

# Extra listeners on top of activation are refused.
cat >"$T/launch2.py" <<'PY'
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(1)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
PY
rc=0
/usr/bin/python3 "$T/launch2.py" "$T/sock2" "$FERRY_NBD" --socket "$T/other" "$T/disk" 2>"$T/err" || rc=$?
[ $rc -eq 2 ] && grep -qF "cannot be combined with socket activation" "$T/err" || { cat "$T/err"; fail "combination accepted"; }

if command -v systemd-socket-activate >/dev/null; then
  systemd-socket-activate -l "$T/sd.sock" "$FERRY_NBD" --pidfile "$T/sd.pid" "$T/disk" 2>"$T/sd.log" &
  track_pid $!
  wait_for_file "$T/sd.sock"
  # The first connection starts ferry-nbd, which then serves it.
  nbdcopy "nbd+unix:///?socket=$T/sd.sock" "$T/back2"
  same_bytes "$T/disk" "$T/back2"
  kill -TERM "$(wait_for_pidfile "$T/sd.pid")"
else
  echo "systemd-socket-activate not installed: launcher only"
fi
echo "activation ok"
