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
