#!/usr/bin/env bash
# ferry-fuse --publish PATH: PATH is a symlink to the clone while it hydrates; at convergence
# the destination is renamed over it (a regular file with the source's bytes and our writes),
# a descriptor opened before keeps working through the clone, and the server exits by itself
# (map committed, unmounted) once that last descriptor closes.  Refusals name the problem.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"

MNT=$T/mnt
src=$T/src.img dst=$T/work/disk map=$T/work/map ctl=$T/work/ctl path=$T/disk.0
mkdir -p "$T/work"
head -c $((8 << 20)) /dev/urandom >"$src"
truncate -s $((10 << 20)) "$src" # a zero tail
truncate -s "$(stat -c %s "$src")" "$dst"
cp "$src" "$T/expect"

# Refusals, before anything is mounted.
expect_fail "--publish needs a clone (--source and --map)" \
  "$FERRY_FUSE" --foreground --publish "$path" "$src" "$MNT"
mkdir -p "$MNT"
: >"$T/regular"
expect_fail "--publish $T/regular: it exists and is not a symlink: refusing to replace it" \
  "$FERRY_FUSE" --foreground --publish "$T/regular" --source "$src" --map "$map" "$dst" "$MNT"
if [ "$(stat -c %d /dev/shm)" != "$(stat -c %d "$T")" ]; then
  shm=$(mktemp /dev/shm/ferry-publish.XXXXXX)
  cleanup rm -f "$shm" "$shm.map"
  truncate -s "$(stat -c %s "$src")" "$shm"
  expect_fail "is on another filesystem (it is renamed over $path at convergence)" \
    "$FERRY_FUSE" --foreground --publish "$path" --source "$src" --map "$shm.map" "$shm" "$MNT"
fi
expect_fail "is not a file (it is renamed over" \
  "$FERRY_FUSE" --foreground --publish "$path" --source "$src" --map "$map" "nbd://localhost/x" "$MNT"
[ ! -e "$path" ] && [ ! -e "$map" ] || fail "a refused start left $path or the map behind"

# Hydrating slowly: PATH is the clone.
fuse_start "$MNT" --publish "$path" --control "$ctl" --rate 512K --source "$src" --map "$map" "$dst"
[ -L "$path" ] && [ "$(readlink "$path")" = "$MNT/disk" ] || fail "$path is not a symlink to $MNT/disk"
cmp "$path" "$T/expect" || fail "reading through $path differs from the source"

# A VM's descriptor: opened through PATH before convergence, written through, kept open.
coproc HOLDER { /usr/bin/python3 -u -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for line in sys.stdin:
    off, text = line.split()
    os.pwrite(fd, text.encode(), int(off))
    os.fsync(fd)
    print("ok", flush=True)
' "$path"; }
echo "$((3 << 20)) before-convergence" >&"${HOLDER[1]}"
read -r ok <&"${HOLDER[0]}" && [ "$ok" = ok ] || fail "write through $path"
printf before-convergence | dd of="$T/expect" bs=1 seek=$((3 << 20)) conv=notrunc status=none

"$FERRY" set-rate "$ctl" 0 >/dev/null
"$FERRY" wait --timeout 60 "$ctl" >/dev/null || fail "the clone did not converge"
for ((i = 0; i < 100; i++)); do [ -L "$path" ] || break; sleep 0.05; done
[ -f "$path" ] && [ ! -L "$path" ] || fail "$path is not the destination file after convergence"
[ ! -e "$dst" ] || fail "$dst is still there: it should have been renamed over $path"
kill -0 "$FUSE_PID" || fail "ferry-fuse exited while a descriptor was open"
"$FERRY" status --json "$ctl" | grep -q '"clients": *1' || fail "status does not count the open descriptor"

# The old descriptor still works, through the clone, into the same file.
echo "$((5 << 20)) after-convergence" >&"${HOLDER[1]}"
read -r ok <&"${HOLDER[0]}" && [ "$ok" = ok ] || fail "write through the old descriptor"
printf after-convergence | dd of="$T/expect" bs=1 seek=$((5 << 20)) conv=notrunc status=none
cmp "$path" "$T/expect" || fail "$path differs from the source plus both writes"

# The last descriptor closes: the server exits by itself, cleanly.
exec {HOLDER[1]}>&-
wait "$HOLDER_PID" || true
fuse_wait_exit
fuse_assert_clean "$MNT"
[ ! -e "$ctl" ] || fail "control socket left behind"
[ -s "$map" ] || fail "the map is gone"
cmp "$path" "$T/expect" || fail "$path differs after the exit"
echo "ok: converged, renamed over $path, exited once unused"

# Started again: the destination is PATH now; converged, unused, so it exits at once.
"$FERRY_FUSE" --foreground --publish "$path" --control "$ctl" --source "$src" --map "$map" \
  "$dst" "$MNT" 2>"$T/restart.err" || { cat "$T/restart.err"; fail "a restart after the rename failed"; }
fuse_assert_clean "$MNT"
cmp "$path" "$T/expect" || fail "$path changed on a restart"
fuse_check_sanitizer_logs
echo "ok: a restart after the rename opens $path and leaves it as it is"
