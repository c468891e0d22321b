#!/usr/bin/env bash
# ferry-fuse --source SRC --map MAP DEST: while the clone hydrates (rate-limited), the disk
# reads back the source plus our writes; the control socket reports it; it converges; the
# destination then holds the same bytes, and a remount with the same map serves them.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"
requires python3

MNT="$T/mnt"
src="$T/src.img" dst="$T/dst.img" map="$T/map" ctl="$T/ctl.sock"
head -c $((16 << 20)) /dev/urandom >"$src"
truncate -s 1M "$T/hole" && cat "$T/hole" >>"$src" # a zero tail the hydrator may skip
truncate -s "$(stat -c %s "$src")" "$dst"
cp "$src" "$T/expect"

# 1 MiB/s: far from converged while we read and write.
fuse_start "$MNT" --control "$ctl" --source "$src" --map "$map" --rate 1M --region-size 64K "$dst"
state=$("$FERRY" status --json "$ctl" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
[ "$state" = hydrating ] || fail "state '$state', want hydrating"
[ "$(stat -c %s "$MNT/disk")" = "$(stat -c %s "$src")" ] || fail "clone size"

# A partial write into a region not yet hydrated, and one spanning regions; then fsync.
head -c 5000 /dev/urandom >"$T/w1"
head -c 200000 /dev/urandom >"$T/w2"
dd if="$T/w1" of="$MNT/disk" bs=5000 seek=$((9 << 20)) oflag=seek_bytes conv=notrunc,fsync status=none
dd if="$T/w2" of="$MNT/disk" bs=200000 seek=$((12 << 20 | 777)) oflag=seek_bytes conv=notrunc,fsync status=none
dd if="$T/w1" of="$T/expect" bs=5000 seek=$((9 << 20)) oflag=seek_bytes conv=notrunc status=none
dd if="$T/w2" of="$T/expect" bs=200000 seek=$((12 << 20 | 777)) oflag=seek_bytes conv=notrunc status=none
# Read everything while hydrating: on-demand fetches must return the right bytes.
cmp "$MNT/disk" "$T/expect" || fail "clone read while hydrating differs"
state=$("$FERRY" status --json "$ctl" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
echo "state after reading: $state"

# Lift the rate limit and wait for convergence through the control socket.
"$FERRY" set-rate "$ctl" 0 >/dev/null
"$FERRY" wait --timeout 60 "$ctl" | grep -q converged || fail "clone did not converge"
cmp "$MNT/disk" "$T/expect" || fail "clone read after convergence differs"
fuse_stop "$MNT"
[ ! -e "$ctl" ] || fail "control socket left behind"
cmp "$dst" "$T/expect" || fail "destination differs from source + writes"

# Remount with the same map: converged at once, same bytes.
fuse_start "$MNT" --control "$ctl" --source "$src" --map "$map" "$dst"
"$FERRY" wait --timeout 10 "$ctl" | grep -q converged || fail "remounted clone not converged"
cmp "$MNT/disk" "$T/expect" || fail "remounted clone differs"
fuse_stop "$MNT"
# The VM path: a clone of an NBD source (nbdkit), loop-attached, read through /dev/loopN
# while hydrating, then converged; detached and unmounted on SIGTERM.
if command -v nbdkit >/dev/null; then
  start_nbdkit "$T/src.sock" file "$src"
  truncate -s "$(stat -c %s "$src")" "$T/dst2.img"
  fuse_start "$MNT" --loop --control "$ctl" --source "nbd+unix:///?socket=$T/src.sock" \
    --map "$T/map2" --rate 1M "$T/dst2.img"
  dev=$(cat "$FUSE_OUT")
  [[ $dev == /dev/loop* ]] || fail "no loop device printed: '$dev'"
  cmp "$dev" "$src" || fail "clone of NBD source read through $dev differs"
  "$FERRY" set-rate "$ctl" 0 >/dev/null
  "$FERRY" wait --timeout 60 "$ctl" | grep -q converged || fail "NBD clone did not converge"
  fuse_stop "$MNT"
  cmp "$T/dst2.img" "$src" || fail "destination of the NBD clone differs"
fi
fuse_check_sanitizer_logs
echo "fuse clone ok"
