#!/usr/bin/env bash
# Undeploy, then resume on another host and system datastore (onevm undeploy + onevm deploy to
# the new cluster's datastore), through the ferry TM driver with the lines epilog_stop and
# prolog_resume write.  The undeploy's move to the front-end returns at once (the front-end's
# clone hydrates from hostA); the resume's move to hostB clones the front-end's disk, itself
# still a clone: the test guest boots on hostB from DST_PATH while both hydrate, verifies its
# files and writes.  When hostB's clone converged, the front-end's (no longer needed) stops and
# hostA's source goes: DST_PATH is a plain file with the guest's writes, e2fsck clean, nothing
# is left on any host.  The failures: the source host unreachable at the undeploy, the
# destination full at the resume: the message names the problem, the VM's disk is intact.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-guest.sh"
. "$TESTS_DIR/lib-tm.sh"
tm_setup
tm_config FERRY_RATE 2M

epilog_stop() { # VMID HOST SYS_DS
  tm_transfer "MV.ferry ssh $2:$DS/$3/$1/disk.0 fe:$DS/$3/$1/disk.0 $1 1" \
    "MV ferry $2:$DS/$3/$1 fe:$DS/$3/$1 $1 $3"
}
prolog_resume() { # VMID PREV_DS HOST SYS_DS
  tm_transfer "MV.ferry ssh fe:$DS/$2/$1/disk.0 $3:$DS/$4/$1/disk.0 $1 1" \
    "MV ferry fe:$DS/$2/$1 $3:$DS/$4/$1 $1 $4"
}
new_vm() { # ID MIB_OF_FILES
  local d=$T/hosts/hostA/ds/0/$1
  mkdir -p "$d"
  guest_disk "$d/disk.0" 256M "$2"
  head -c 65536 /dev/urandom >"$d/disk.1"
  vm_xml "$1"
}

# --- undeploy with hostA unreachable: refused, the disk stays where it is.
new_vm 43 4
sum=$(sha "$T/hosts/hostA/ds/0/43/disk.0")
host_down hostA
epilog_stop 43 hostA 0
host_up hostA
[ "$TM_RC" != 0 ] || fail "the undeploy from an unreachable host succeeded"
grep -qF "hostA is unreachable by ssh" "$T/tm.err" || { cat "$T/tm.err"; fail "the message does not name the unreachable host"; }
echo "ok: source unreachable: $(grep ERROR "$T/tm.err" | tail -1)"
[ "$(sha "$T/hosts/hostA/ds/0/43/disk.0")" = "$sum" ] || fail "VM 43's disk changed"
on_host fe test ! -e "$DS/0/43" || fail "the front-end has a VM 43 directory after the failure"
tm_assert_clean

# --- undeploy VM 42: hostA -> front-end.
new_vm 42 16
epilog_stop 42 hostA 0
[ "$TM_RC" = 0 ] || { cat "$T/tm.err"; fail "the undeploy's transfer failed"; }
echo "undeploy: the transfer returned in $TM_SECONDS s (figure, not asserted)"
on_host fe test -L "$DS/0/42/disk.0" -a -f "$DS/0/42/disk.1" || fail "the front-end does not hold VM 42"
on_host hostA test ! -e "$DS/0/42/disk.1" || fail "hostA still has the copied files"
[ "$(ferry_json fe "$DS/0/42/.ferry/disk.0/ctl" state)" = hydrating ] || fail "the front-end's clone is not hydrating"

# --- resume on hostB's full system datastore 100: refused, the front-end keeps the VM.
mkdir -p "$T/hosts/hostB/ds/100"
on_host hostB mount -t tmpfs -o size=24m ferry-test "$DS/100"
prolog_resume 42 0 hostB 100
on_host hostB umount "$DS/100"
[ "$TM_RC" != 0 ] || fail "the resume onto a full datastore succeeded"
grep -qF "not enough space" "$T/tm.err" || { cat "$T/tm.err"; fail "the message does not say the destination is full"; }
echo "ok: destination full: $(grep ERROR "$T/tm.err" | tail -1)"
on_host hostB test ! -e "$DS/100/42" || fail "hostB holds VM 42 after the failure"
on_host fe test -L "$DS/0/42/disk.0" -a -f "$DS/0/42/disk.1" || fail "the front-end lost VM 42's files"
cmp <(on_host fe head -c $((8 << 20)) "$DS/0/42/disk.0") <(head -c $((8 << 20)) "$T/hosts/hostA/ds/0/42/disk.0") ||
  fail "the front-end's clone does not read the VM's disk"

# --- resume on hostB's system datastore 100, the guest boots there while the disk hydrates.
prolog_resume 42 0 hostB 100
[ "$TM_RC" = 0 ] || { cat "$T/tm.err"; fail "the resume's transfer failed"; }
echo "resume: the transfer returned in $TM_SECONDS s (figure, not asserted)"
d=$DS/100/42 ctl=$DS/100/42/.ferry/disk.0/ctl
guest_on hostB g verify --append "ferry.files=8" -- -drive "file=$d/disk.0,format=raw,cache=none,if=virtio"
guest_wait g 'ferry-guest: verified' 180
echo "the guest verified its files on hostB: clone $(ferry_json hostB "$ctl" state), the front-end's $(ferry_json fe "$DS/0/42/.ferry/disk.0/ctl" state)"
[ "$(ferry_json hostB "$ctl" state)" = hydrating ] || fail "hostB's disk was not hydrating while the guest verified"
guest_wait_exit g 180
# What the guest last saw, read through DST_PATH (the clone, if it has not converged yet).
seen=$(on_host hostB sha256sum "$d/disk.0" | cut -d' ' -f1)

host_ferry hostB set-rate "$ctl" 0 >/dev/null 2>&1 || true # (it may have converged and exited)
wait_plain hostB "$d/disk.0"
[ "$(on_host hostB sha256sum "$d/disk.0" | cut -d' ' -f1)" = "$seen" ] ||
  fail "the plain file differs from what the guest last saw through the clone"
echo "ok: hostB:$d/disk.0 is a plain file, byte-identical to what the guest last saw"
wait_gone fe "$DS/0/42"
wait_gone hostA "$DS/0/42"
tm_assert_clean
guest_check_disk g "$T/hosts/hostB/ds/100/42/disk.0"
echo "ok: undeploy -> resume on another host and datastore; nothing left on hostA or the front-end"
