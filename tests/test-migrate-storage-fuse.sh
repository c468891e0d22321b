#!/usr/bin/env bash
# ferry migrate --frontend fuse: the destination clone is served by ferry-fuse --loop (a FUSE
# file, loop-attached) instead of ferry-nbd; first read through MOUNTPOINT/disk; at the end the
# mount and the loop device are gone and the destination equals the source.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-storage.sh"
[ -x "$FERRY_FUSE" ] || skip "ferry-fuse not built"
[ -e /dev/fuse ] || skip "no /dev/fuse"
requires fusermount3 losetup
requires_root   # --loop attaches a loop device
[ -e /dev/loop-control ] || skip "no loop devices"
make_world
migrate --storage fs --datastores "$T/ds" --frontend fuse --journal "$T/j.json" > "$T/out" 2>&1 ||
  { cat "$T/out" "$T"/j.json.d/*.log; fail "migrate --frontend fuse failed"; }
grep -qE "^downtime: [0-9.]+ s " "$T/out" || fail "no downtime line"
grep -qF "] disk 0: destination clone serving (pid " "$T/out" || fail "no server line"
grep -qF -- "--loop --control $T/j.json.d/disk-0.ctl" "$T/out" || fail "not started with --loop"
grep -qF "ferry-fuse stopped, map committed" "$T/out" || fail "ferry-fuse not stopped gracefully"
grep -qE '^/dev/loop[0-9]+$' "$T/j.json.d/disk-0.log" || fail "no loop device was attached"
cmp "$T/ds/100/42/disk.0" "$T/source.orig" || fail "destination differs from the source"
! grep -qF "$T/j.json.d/disk-0.mnt" /proc/mounts || fail "FUSE mount left behind"
! losetup -a | grep -qF "$T/j.json.d/disk-0.mnt" || fail "loop device left attached"
echo "migrate --frontend fuse ok"
