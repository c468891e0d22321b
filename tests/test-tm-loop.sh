#!/usr/bin/env bash
# The ferry TM driver with FERRY_FRONTEND=loop (BLOCK disks): the cold migration's mv makes
# DST_PATH a symlink to a loop device over the clone's FUSE file; reads of the device equal the
# source while it hydrates, writes through it land in the clone; at convergence DST_PATH is the
# plain destination file holding the source's bytes plus those writes, and once nothing holds
# the device it is detached: no loop device, mount or ferry process is left.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-tm.sh"
requires losetup
[ -e /dev/loop-control ] || skip "no loop devices here (/dev/loop-control missing)"
tm_setup
tm_config FERRY_FRONTEND loop
tm_config FERRY_RATE 4M

d=$T/hosts/hostA/ds/0/70
tm_make_vm 70 128 16 100
cp "$d/disk.0" "$T/expected"
tm_transfer_ok "MV.ferry ssh hostA:$DS/0/70/disk.0 hostB:$DS/0/70/disk.0 70 1" \
  "MV ferry hostA:$DS/0/70 hostB:$DS/0/70 70 0"
echo "mv with the loop frontend returned in $TM_SECONDS s (figure, not asserted)"
p=$DS/0/70/disk.0
dev=$(on_host hostB readlink "$p")
[[ $dev =~ ^/dev/loop[0-9]+$ ]] || fail "hostB:$p points at '$dev', not a loop device"
[ -b "$dev" ] || fail "$dev is not a block device"
[ "$(blockdev --getsize64 "$dev")" = $((128 << 20)) ] || fail "$dev has the wrong size"
losetup -a | grep -F "$dev:" | grep -qF "$DS/0/70/.ferry/disk.0/mnt/disk" ||
  { losetup -a >&2; fail "$dev is not backed by the clone's FUSE file"; }

# Reads through DST_PATH (the device) while hydrating, and a write that must survive.
on_host hostB dd if="$p" bs=1M count=16 iflag=direct status=none | cmp - <(head -c $((16 << 20)) "$T/expected") ||
  fail "reading $dev differs from the source"
on_host hostB dd if="$p" bs=1M skip=100 count=1 iflag=direct status=none |
  cmp - <(dd if="$T/expected" bs=1M skip=100 count=1 status=none) || fail "reading $dev at 100 MiB differs"
head -c 65536 /dev/urandom >"$T/patch"
on_host hostB dd if="$T/patch" of="$p" bs=65536 seek=600 oflag=direct conv=notrunc,fsync status=none ||
  fail "writing through $dev"
dd if="$T/patch" of="$T/expected" bs=65536 seek=600 conv=notrunc status=none
echo "ok: DST_PATH is $dev over the clone; reads equal the source, a write went through"

wait_plain hostB "$p"
wait_gone hostB "$DS/0/70/.ferry"
wait_gone hostA "$DS/0/70"
on_host hostB cmp "$p" "$T/expected" || fail "the converged destination lacks the source's bytes or the write"
tm_assert_clean
losetup -a | grep -qF "$dev:" && { losetup -a >&2; fail "$dev is still attached"; }
echo "ok: converged to a plain file with the write, the loop device detached, nothing runs"
