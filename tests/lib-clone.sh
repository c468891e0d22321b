# Helpers for tests/test-clone-*.sh (after functions.sh).

: "${CLONETOOL:?run through meson test}"

# json_get FILE KEY: one top-level field of the JSON object in FILE.
json_get() {
  /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# nbdkit_read_bytes STATSFILE: bytes read through an nbdkit stats filter (summed over runs).
nbdkit_read_bytes() {
  /usr/bin/python3 - "$1" <<'PY'
import re, sys
units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
total = 0
for line in open(sys.argv[1]):
    m = re.match(r"read: \d+ ops, [\d.]+ s, ([\d.]+) (\w+)", line)
    if m:
        total += float(m.group(1)) * units[m.group(2)]
print(int(total))
PY
}

# stop_nbdkit PIDFILE: stop an nbdkit we started (so its stats filter writes its file).
stop_nbdkit() {
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

# clone_nbdkit SOCKET PIDFILE ARGS...: nbdkit in the foreground (background job) on a unix
# socket, tracked; waits for its pidfile.  (functions.sh's start_nbdkit passes
# --exit-with-parent, which keeps nbdkit in the foreground and so never returns.)
clone_nbdkit() {
  local sock=$1 pidf=$2; shift 2
  rm -f "$pidf"
  nbdkit -f -U "$sock" -P "$pidf" "$@" 2>>"$T/nbdkit.log" &
  track_pid $!
  wait_for_pidfile "$pidf" >/dev/null
  wait_for_file "$sock"
}
