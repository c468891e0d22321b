#!/usr/bin/env bash
# ferry-fuse over NBD (nbdkit file plugin on a unix socket): the disk's checksum equals the
# source (over -C 3 connections too); writes + fsync reach the export and survive a remount; a read-only export is
# served read-only without asking.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-fuse.sh"
requires nbdkit

MNT="$T/mnt"
img="$T/disk.img"
head -c $((20 << 20)) /dev/urandom >"$img"
truncate -s 24M "$img" # and a hole at the end
cp "$img" "$T/expect"
sock="$T/nbd.sock"
start_nbdkit "$sock" file "$img"
uri="nbd+unix:///?socket=$sock"

# -C: that many connections (nbdkit's file plugin allows multi-conn).
FERRY_DEBUG=nbd fuse_start "$MNT" -C 3 "$uri"
grep -q "3 connection(s) (multi-conn)" "$FUSE_ERR" || { cat "$FUSE_ERR" >&2; fail "-C 3 did not open 3 connections"; }
[ "$(sha "$MNT/disk")" = "$(sha "$img")" ] || fail "disk checksum over 3 connections differs"
fuse_stop "$MNT"

fuse_start "$MNT" "$uri"
[ "$(stat -c %s "$MNT/disk")" = $((24 << 20)) ] || fail "disk size"
[ "$(sha "$MNT/disk")" = "$(sha "$img")" ] || fail "disk checksum differs from the NBD source"
head -c 300000 /dev/urandom >"$T/w"
dd if="$T/w" of="$MNT/disk" bs=300000 seek=$((21 << 20 | 99)) oflag=seek_bytes conv=notrunc,fsync status=none
dd if="$T/w" of="$T/expect" bs=300000 seek=$((21 << 20 | 99)) oflag=seek_bytes conv=notrunc status=none
fallocate -z -o $((1 << 20)) -l $((1 << 20)) "$MNT/disk"
dd if=/dev/zero of="$T/expect" bs=1M seek=1 count=1 conv=notrunc status=none
fuse_stop "$MNT"
cmp "$img" "$T/expect" || fail "NBD export differs after writes + fsync"

# Remount with a control socket: a plain volume reports state "direct" and its open files.
fuse_start "$MNT" --control "$T/ctl" "$uri"
exec 7<"$MNT/disk"
"$FERRY" status --json "$T/ctl" >"$T/status.json"
exec 7<&-
/usr/bin/python3 - "$T/status.json" <<'PY' || fail "control status: $(cat "$T/status.json")"
import json, sys
st = json.load(open(sys.argv[1]))
assert st["state"] == "direct", st
assert st["size"] == 24 << 20, st
assert st["clients"] == 1, st
assert st["program"] == "ferry-fuse", st
PY
cmp "$MNT/disk" "$T/expect" || fail "remount over NBD differs"
fuse_stop "$MNT"
[ ! -e "$T/ctl" ] || fail "control socket left behind"

# A read-only export (nbdkit -r): served read-only without --read-only.
sock2="$T/nbd-ro.sock"
start_nbdkit "$sock2" -r file "$img"
fuse_start "$MNT" "nbd+unix:///?socket=$sock2"
[ "$(stat -c %a "$MNT/disk")" = 444 ] || fail "read-only export mode $(stat -c %a "$MNT/disk")"
cmp "$MNT/disk" "$T/expect" || fail "read-only export differs"
fuse_stop "$MNT"
fuse_check_sanitizer_logs
echo "fuse nbd ok"
