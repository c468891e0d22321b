# Helpers for tests/test-control-*.sh (after functions.sh).

# start_control_server PIDFILE ARGS...: tests/control-server in the background; waits until
# it serves (its pidfile is written after the socket listens) and tracks its PID.
start_control_server() {
  local pidf=$1; shift
  "$CONTROL_SERVER" --pidfile "$pidf" "$@" &
  track_pid $!
  wait_for_pidfile "$pidf" >/dev/null
}

# control_request SOCKET JSON: send one request line, print the reply line.
control_request() {
  /usr/bin/python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    d = s.recv(65536)
    if not d:
        break
    buf += d
sys.stdout.write(buf.decode())
EOF
}

# json_field JSON PATH: print one field ("status.state") of a JSON text.
json_field() {
  /usr/bin/python3 -c '
import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    v = v[k]
print(json.dumps(v) if not isinstance(v, str) else v)' "$1" "$2"
}

# status_field SOCKET FIELD: one field of the live status.
status_field() {
  json_field "$(control_request "$1" '{"command":"status"}')" "status.$2"
}

# wait_status SOCKET SECONDS PYTHON_CONDITION: poll the status until the condition (on `s`,
# the status dict) holds; fail after SECONDS.
wait_status() {
  /usr/bin/python3 - "$@" <<'EOF2' || fail "status never satisfied: $3"
import json, socket, sys, time
path, limit, cond = sys.argv[1], float(sys.argv[2]), sys.argv[3]
end = time.monotonic() + limit
s = None
while True:
    try:  # the socket may not be there yet, or not listening yet
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        c.sendall(b'{"command":"status"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            buf += c.recv(65536)
        c.close()
        s = json.loads(buf)["status"]
        if eval(cond):
            sys.exit(0)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    if time.monotonic() > end:
        print("last status:", s, file=sys.stderr)
        sys.exit(1)
    time.sleep(0.05)
EOF2
}

