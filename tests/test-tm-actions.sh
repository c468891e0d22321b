#!/usr/bin/env bash
# The ferry TM driver's other actions, with the lines TransferManager.cc writes (for disks of a
# datastore whose TM_MAD is ferry, or ferry as the system datastore's: vm_tm): those that move
# no data reach the base driver (ferryrc BASE_TM) with their arguments unchanged; resize and the
# snapshot actions refuse a disk that is still a clone, naming it; delete of a VM whose disk
# still hydrates stops the clone and its export, removes the source (the VM is gone), then the
# base driver deletes as it always does.  And meson installs every action of the tree.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-tm.sh"
tm_setup
tm_config FERRY_RATE 256K
S=$DS/0/42 IMG=/var/lib/one//datastores/1/0123456789abcdef

delegated() { # LINE: the base driver got exactly this line's arguments
  local line=$1 words
  read -r -a words <<<"$line"
  : >"$REMOTES/calls.log"
  tm_transfer_ok "$line"
  grep -qxF "${words[0],,} ${words[*]:2}" "$REMOTES/calls.log" ||
    { cat "$REMOTES/calls.log" >&2; fail "not delegated unchanged: $line"; }
  echo "ok: delegated: $line"
}
delegated "CLONE ferry fe:$IMG hostA:$S/disk.0 42 1"
delegated "LN ferry fe:$IMG hostA:$S/disk.0 42 1"
delegated "MKSWAP ferry 1024 hostA:$S/disk.2 42 0"
delegated "MKIMAGE ferry 2048 raw hostA:$S/disk.3 42 0"
delegated "CONTEXT ferry /var/lib/one/vms/42/context.sh /var/lib/one/files/a.sh hostA:$S/disk.1 42 0"
delegated "MVDS ferry hostA:$S/disk.0 $IMG 42 1"
delegated "CPDS ferry hostA:$S/disk.0 $IMG -1 42 1"
delegated "RESIZE ferry hostA:$S/disk.0 4096 42 0"
delegated "SNAP_CREATE ferry hostA:$S/disk.0 1 42 0"
delegated "SNAP_DELETE ferry hostA:$S/disk.0 1 42 0"
delegated "SNAP_REVERT ferry hostA:$S/disk.0 1 42 0"
delegated "DELETE ferry hostA:$S 42 0"

# A VM whose disk hydrates on hostB (256 KiB/s: for a while).
d=$T/hosts/hostA/ds/0/42
mkdir -p "$d"
truncate -s 64M "$d/disk.0"
head -c $((8 << 20)) /dev/urandom | dd of="$d/disk.0" conv=notrunc status=none
vm_xml 42
tm_transfer_ok "MV ferry hostA:$S hostB:$S 42 0"
on_host hostB test -L "$S/disk.0" || fail "no clone on hostB"

for a in "RESIZE ferry hostB:$S/disk.0 4096 42 0" "SNAP_CREATE ferry hostB:$S/disk.0 1 42 0" \
  "SNAP_REVERT ferry hostB:$S/disk.0 1 42 0"; do
  : >"$REMOTES/calls.log"
  tm_transfer_fails "hostB:$S/disk.0: ferry is still moving this disk (ferry status $S/.ferry/disk.0/ctl on hostB)" "$a"
  [ ! -s "$REMOTES/calls.log" ] || fail "the base driver was called for a disk still cloning"
done

# Terminate: the epilog's DELETE lines for the disk (its own driver) and the directory.
: >"$REMOTES/calls.log"
tm_transfer_ok "DELETE.ferry ssh hostB:$S/disk.0 42 1" "DELETE ferry hostB:$S 42 0"
grep -qx "delete hostB:$S 42 0" "$REMOTES/calls.log" || fail "the base driver did not delete the directory"
on_host hostB test ! -e "$S" || fail "hostB:$S is still there"
wait_gone hostA "$S" 30
tm_assert_clean
echo "ok: delete of a VM whose disk still hydrated: clone and export stopped, source removed"

# meson installs what the tree has (opennebula/meson.build's list).
for f in "$SRCDIR"/opennebula/tm/ferry/*; do
  n=$(basename "$f")
  grep -qF "'$n'" "$SRCDIR/opennebula/meson.build" || fail "opennebula/meson.build does not install $n"
done
echo "ok: every file of opennebula/tm/ferry is installed"
