# Helpers for tests that boot the test guest (tests/guest/build) under qemu.  Source after
# functions.sh.  Guests run in the plain build only and are stopped by PID at exit.
#
#   guest_disk IMG SIZE [MIB_OF_FILES]   ext4 image of generated files + MANIFEST (sha256)
#   guest_start NAME MODE [--append ARGS] -- QEMU_DISK_ARGS...
#                                        boot; sets GUEST_QMP GUEST_LOG GUEST_PID (of NAME)
#   guest_wait NAME REGEX [SECONDS]      wait for a serial line (fails on FAILED / exit)
#   guest_send NAME TEXT                 a line on the guest's console ("stop")
#   guest_wait_exit NAME [SECONDS]       wait for the power-off; qemu must exit 0
#   guest_gaps NAME [FROM_REGEX]         heartbeat/ack gap analysis (host arrival times)
#   guest_check_disk NAME IMG            e2fsck -fn, every file of both manifests, every ack
#   qmp SOCKET COMMAND [JSON]            one QMP command (tests/guest/qmp.py)
skip_under_sanitizers
requires qemu-system-x86_64 mkfs.ext4 e2fsck debugfs
GUEST_DIR=$TESTS_DIR/guest
_guest_env=$("$GUEST_DIR/build") || {
  rc=$?
  [ $rc = 77 ] && skip "test guest unavailable"
  fail "tests/guest/build failed ($rc)"
}
eval "$_guest_env"
declare -A _guest_pid _guest_qmp _guest_log _guest_in _guest_serial_pid

_guest_cleanup() {
  local name pid i
  for name in "${!_guest_pid[@]}"; do
    pid=${_guest_pid[$name]}
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null
  done
  for name in "${!_guest_serial_pid[@]}"; do
    kill "${_guest_serial_pid[$name]}" 2>/dev/null
  done
  # Clone servers outlive ferry live-move by design (the guest's disk): a test that failed
  # half-way leaves them running; everything whose command line names our $T is ours.
  local left
  left=$(pgrep -f -- "$T/" || true)
  for pid in $left; do kill -TERM "$pid" 2>/dev/null; done
  for pid in $left; do
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null
  done
}
cleanup _guest_cleanup

qmp() { /usr/bin/python3 "$GUEST_DIR/qmp.py" "$@"; }

# guest_disk IMG SIZE [MIB_OF_FILES [MKFS_OPTIONS...]]: generated files (data/f-N.bin, 4 KiB ..
# 1 MiB) with their sha256 in /MANIFEST, made into an ext4 image by mkfs.ext4 -d (no mount).
# Big sparse disks: pass e.g. -N 16384 -J size=16 to keep inode tables and journal small.
guest_disk() {
  local img=$1 size=$2 mib=${3:-8} d
  shift 3 2>/dev/null || shift $#
  d=$(mktemp -d "$T/files.XXXXXX")
  mkdir -p "$d/data"
  local i=0 total=0 len
  while [ $total -lt $((mib << 20)) ]; do
    len=$(((i % 8 + 1) * 131072 - (i % 3) * 4096))
    head -c $len /dev/urandom >"$d/data/f-$i.bin"
    total=$((total + len))
    i=$((i + 1))
  done
  (cd "$d" && sha256sum data/* >MANIFEST)
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$@" -d "$d" "$img" "$size" >/dev/null
  rm -rf "$d"
}

# guest_start NAME MODE [--append "k=v ..."] -- QEMU ARGS (the disk: -blockdev/-device ...).
guest_start() {
  local name=$1 mode=$2 extra=""
  shift 2
  if [ "${1:-}" = --append ]; then extra=$2; shift 2; fi
  [ "${1:-}" = -- ] && shift
  local log=$T/$name.serial qmp_sock=$T/$name.qmp in=$T/$name.in ser=$T/$name.ser
  : >"$log"
  mkfifo "$in"
  /usr/bin/python3 "$GUEST_DIR/serial.py" "$ser" "$log" "$in" >"$T/$name.serial-ready" &
  _guest_serial_pid[$name]=$!
  wait_for_file "$ser" 10
  qemu-system-x86_64 -machine "accel=$ACCEL" -m 256 -smp 1 -nodefaults -no-user-config \
    -display none -no-reboot -name "ferry-test-$name" \
    -pidfile "$T/$name.pid" -qmp "unix:$qmp_sock,server=on,wait=off" \
    -chardev "socket,id=ser0,path=$ser" -serial chardev:ser0 \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 quiet panic=-1 ferry.mode=$mode $extra" \
    "$@" >"$T/$name.qemu.log" 2>&1 &
  _guest_pid[$name]=$!
  _guest_qmp[$name]=$qmp_sock
  _guest_log[$name]=$log
  _guest_in[$name]=$in
  GUEST_PID=$!
  GUEST_QMP=$qmp_sock
  GUEST_LOG=$log
  local i
  for ((i = 0; i < 200; i++)); do
    [ -S "$qmp_sock" ] && return 0
    kill -0 "$GUEST_PID" 2>/dev/null || { cat "$T/$name.qemu.log" >&2; fail "qemu ($name) exited at start"; }
    sleep 0.05
  done
  fail "qemu ($name): no QMP socket after 10 s"
}

guest_qmp() { echo "${_guest_qmp[$1]}"; }
guest_log() { echo "${_guest_log[$1]}"; }
guest_pid() { echo "${_guest_pid[$1]}"; }

# guest_wait NAME REGEX [SECONDS]: a serial line matching REGEX (extended).
guest_wait() {
  local name=$1 re=$2 limit=${3:-120} i log=${_guest_log[$1]}
  for ((i = 0; i < limit * 10; i++)); do
    grep -qE -- "$re" "$log" && return 0
    if grep -q 'ferry-guest: FAILED' "$log"; then
      tail -20 "$log" >&2
      fail "guest $name: $(grep -m1 'ferry-guest: FAILED' "$log" | cut -d' ' -f2-)"
    fi
    if ! kill -0 "${_guest_pid[$name]}" 2>/dev/null; then
      tail -20 "$log" >&2
      cat "$T/$name.qemu.log" >&2
      fail "guest $name exited before printing /$re/"
    fi
    sleep 0.1
  done
  tail -20 "$log" >&2
  fail "guest $name: no /$re/ within $limit s"
}

guest_send() { echo "$2" >"${_guest_in[$1]}"; }

# guest_wait_exit NAME [SECONDS]: qemu exits by itself (power-off) with status 0.
guest_wait_exit() {
  local name=$1 limit=${2:-120} pid=${_guest_pid[$1]} i rc=0
  for ((i = 0; i < limit * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && { tail -20 "${_guest_log[$name]}" >&2; fail "guest $name still running after $limit s"; }
  wait "$pid" || rc=$?
  [ $rc = 0 ] || { cat "$T/$name.qemu.log" >&2; fail "qemu ($name) exited with status $rc"; }
  grep -q 'ferry-guest: done' "${_guest_log[$name]}" ||
    { tail -20 "${_guest_log[$name]}" >&2; fail "guest $name powered off without 'done'"; }
  unset "_guest_pid[$name]"
}

# guest_gaps NAME [FROM_REGEX [TO_REGEX]]: over the heartbeats between the two serial lines
# (default: the whole loop), print the largest gap between consecutive heartbeats and between
# consecutive acknowledged writes, by host arrival time; sets HB_GAP, ACK_GAP (seconds),
# HB_COUNT, ACK_COUNT.
guest_gaps() {
  local name=$1 from=${2:-ferry-guest: wrote} to=${3:-ferry-guest: loop ended}
  local out
  out=$(awk -v from="$from" -v to="$to" '
    !on && $0 ~ from { on = 1; next }
    on && $0 ~ to { exit }
    on && $3 == "hb" { if (hb) { g = $1 - hb; if (g > hbgap) { hbgap = g; hbat = $1 } } hb = $1; nhb++ }
    on && $3 == "ack" { if (ack) { g = $1 - ack; if (g > ackgap) ackgap = g } ack = $1; nack++ }
    END { printf "%d %.3f %.3f %d %.3f\n", nhb, hbgap, hbat, nack, ackgap }' "${_guest_log[$name]}")
  read -r HB_COUNT HB_GAP _hb_at ACK_COUNT ACK_GAP <<<"$out"
  echo "guest $name: $HB_COUNT heartbeats, largest gap $HB_GAP s (at $_hb_at); $ACK_COUNT acknowledged writes, largest gap $ACK_GAP s"
}

# guest_check_disk NAME IMG: the image is a clean ext4 holding the generated files (MANIFEST),
# the files the guest wrote (ferry-guest/MANIFEST.guest) and every write it acknowledged.
guest_check_disk() {
  local name=$1 img=$2 x
  e2fsck -fn "$img" >"$T/e2fsck.out" 2>&1 || { cat "$T/e2fsck.out" >&2; fail "e2fsck -fn $img"; }
  x=$(mktemp -d "$T/extract.XXXXXX")
  debugfs -R "rdump /data /ferry-guest $x" "$img" >/dev/null 2>&1
  debugfs -R "cat /MANIFEST" "$img" >"$x/MANIFEST" 2>/dev/null
  [ -s "$x/MANIFEST" ] || fail "$img: no /MANIFEST"
  (cd "$x" && sha256sum --quiet -c MANIFEST) || fail "$img: generated files differ"
  (cd "$x/ferry-guest" && sha256sum --quiet -c MANIFEST.guest) || fail "$img: the guest's files differ"
  local acked
  acked=$(grep -c ' ferry-guest: ack ' "${_guest_log[$name]}" || true)
  if [ "$acked" -gt 0 ]; then
    [ -f "$x/ferry-guest/writes.log" ] || fail "$img: no writes.log"
    grep ' ferry-guest: ack ' "${_guest_log[$name]}" | awk '{ print $4 }' >"$x/acked"
    awk '{ print $2 }' "$x/ferry-guest/writes.log" >"$x/written"
    local missing
    missing=$(sort "$x/acked" | comm -23 - <(sort -u "$x/written") | head -5)
    [ -z "$missing" ] || fail "$img: acknowledged writes missing: $missing"
  fi
  echo "ok: $img: e2fsck clean, $(wc -l <"$x/MANIFEST") generated files, $(wc -l <"$x/ferry-guest/MANIFEST.guest") guest files, $acked acknowledged writes"
  rm -rf "$x"
}

# json_key FILE KEY: one top-level field of the JSON object in FILE.
json_key() {
  /usr/bin/python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(json.dumps(v) if isinstance(v,(dict,list)) else v)' "$1" "$2"
}

# wait_phase STATE_JSON REGEX [SECONDS]: a live move's state.json reaches a phase.
wait_phase() {
  local f=$1 re=$2 limit=${3:-120} i
  for ((i = 0; i < limit * 20; i++)); do
    if [ -s "$f" ] && grep -qE "\"phase\": \"($re)\"" "$f"; then return 0; fi
    sleep 0.05
  done
  fail "no phase /$re/ in $f within $limit s"
}

# qmp_disk_file QMP_SOCKET QDEV_ID: the image the device's format node reads (its "file").
qmp_disk_file() {
  qmp "$1" query-block | /usr/bin/python3 -c '
import json, sys
for b in json.load(sys.stdin):
    q = b.get("qdev", "")
    if q == "/machine/peripheral/%s/virtio-backend" % sys.argv[1] or b.get("device") == sys.argv[1]:
        print(b["inserted"]["file"])' "$2"
}

# assert_no_process DIR: no process (of this test or any other) has DIR in its command line.
assert_no_process() {
  local p
  p=$(pgrep -f -- "$1" | grep -vx "$$" || true)
  [ -z "$p" ] || { ps -o pid,args -p $p >&2; fail "processes still running on $1"; }
}

# sparse_sha FILE: sha256 over the file's data extents (offset + bytes; holes skipped), for
# images too big to hash whole.
sparse_sha() {
  /usr/bin/python3 - "$1" <<'PY'
import hashlib, os, sys
h = hashlib.sha256()
fd = os.open(sys.argv[1], os.O_RDONLY)
end = os.fstat(fd).st_size
off = 0
while off < end:
    try:
        data = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, data, os.SEEK_HOLE)
    h.update(b"%d:" % data)
    pos = data
    while pos < hole:
        chunk = os.pread(fd, min(8 << 20, hole - pos), pos)
        h.update(chunk)
        pos += len(chunk)
    off = hole
h.update(b"end:%d" % end)
print(h.hexdigest())
PY
}
