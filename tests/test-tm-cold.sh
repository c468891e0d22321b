#!/usr/bin/env bash
# Cold migration (onevm migrate of a powered-off VM, to another host and its own storage)
# through the ferry TM driver, with the lines prolog_migr writes, and the test guest booted on
# the destination from DST_PATH as OpenNebula's deployment file gives it to qemu
# (-drive file=DST_PATH,format=raw,cache=none,if=virtio) while the disk still hydrates: it
# verifies every generated file and keeps writing; meanwhile the clone's serving process is
# killed twice (kill -9) and the guest carries on without an error.  After convergence DST_PATH
# is a plain file holding every write the guest acknowledged, e2fsck clean, the source is gone,
# and no ferry process or mount is left once qemu exits.  Then the failures: the source host
# unreachable, the destination full: the message names the problem, nothing is left behind,
# the VM's disk is intact.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-guest.sh"
. "$TESTS_DIR/lib-tm.sh"
tm_setup
tm_config FERRY_RATE 2M

prolog_migr() { # VMID SRC_HOST DST_HOST SRC_DS DST_DS
  tm_transfer "MV.ferry ssh $2:$DS/$4/$1/disk.0 $3:$DS/$5/$1/disk.0 $1 1" \
    "MV ferry $2:$DS/$4/$1 $3:$DS/$5/$1 $1 $5"
}
new_vm() { # ID MIB_OF_FILES: its disk and context CD on hostA, system datastore 0
  local d=$T/hosts/hostA/ds/0/$1
  mkdir -p "$d"
  guest_disk "$d/disk.0" 256M "$2"
  head -c 65536 /dev/urandom >"$d/disk.1"
  vm_xml "$1"
}

# --- the migration, the guest on the destination, two kills of the clone's server.
new_vm 42 16
src_sha=$(sha "$T/hosts/hostA/ds/0/42/disk.0")
prolog_migr 42 hostA hostB 0 0
[ "$TM_RC" = 0 ] || { echo "$TM_ERR" >&2; fail "the migration's transfer failed"; }
echo "cold migration: the transfer returned in $TM_SECONDS s (figure, not asserted)"
d=$DS/0/42 ctl=$DS/0/42/.ferry/disk.0/ctl
guest_on hostB g loop -- -drive "file=$d/disk.0,format=raw,cache=none,if=virtio"
guest_wait g 'ferry-guest: verified' 180
state=$(ferry_json hostB "$ctl" state) fetched=$(ferry_json hostB "$ctl" bytes_fetched)
echo "the guest verified its files through hostB:$d/disk.0: clone $state, $fetched bytes fetched on demand"
[ "$state" = hydrating ] || fail "the disk was not hydrating while the guest verified ($state)"
guest_wait g 'ferry-guest: ack 20' 120
for k in 1 2; do
  victim=$(ferry_json hostB "$ctl" pid)
  kill -9 "$victim"
  for ((i = 0; i < 200; i++)); do
    p=$(ferry_json hostB "$ctl" pid 2>/dev/null || true)
    [ -n "$p" ] && [ "$p" != "$victim" ] && break
    sleep 0.05
  done
  echo "kill -9 of the clone's server $victim under the running guest: server $p serves on"
  n=$(grep -c ' ferry-guest: ack ' "$(guest_log g)")
  guest_wait g "ferry-guest: ack $((n + 10))\$" 120
done
guest_send g stop
guest_wait_exit g 180
# What the guest last saw, read through DST_PATH (the clone, if it has not converged yet).
seen=$(on_host hostB sha256sum "$d/disk.0" | cut -d' ' -f1)
guest_gaps g
grep -q 'I/O error\|EXT4-fs error' "$(guest_log g)" && fail "the guest saw I/O errors"

host_ferry hostB set-rate "$ctl" 0 >/dev/null 2>&1 || true # (it may have converged and exited)
wait_plain hostB "$d/disk.0"
[ "$(on_host hostB sha256sum "$d/disk.0" | cut -d' ' -f1)" = "$seen" ] ||
  fail "the plain file differs from what the guest last saw through the clone"
echo "ok: hostB:$d/disk.0 is a plain file, byte-identical to what the guest last saw"
tm_assert_clean
wait_gone hostA "$d"
guest_check_disk g "$T/hosts/hostB/ds/0/42/disk.0"
[ "$(sha "$T/hosts/hostB/ds/0/42/disk.0")" != "$src_sha" ] || fail "the guest's writes are not on the destination"
echo "ok: cold migration hostA -> hostB, guest booted while hydrating, 2 kills survived"

# --- the source host unreachable: nothing moves, nothing is left, the disk is intact.
new_vm 43 4
sum=$(sha "$T/hosts/hostA/ds/0/43/disk.0")
host_down hostA
prolog_migr 43 hostA hostB 0 0
[ "$TM_RC" != 0 ] || fail "the migration from an unreachable host succeeded"
grep -qF "hostA is unreachable by ssh" "$T/tm.err" || { cat "$T/tm.err"; fail "the message does not name the unreachable host"; }
echo "ok: source unreachable: $(grep ERROR "$T/tm.err" | tail -1)"
host_up hostA
on_host hostB test ! -e "$DS/0/43" || fail "hostB has a VM 43 directory after the failure"
[ "$(sha "$T/hosts/hostA/ds/0/43/disk.0")" = "$sum" ] || fail "VM 43's disk changed"
tm_assert_clean

# --- the destination full: a system datastore on hostB with 24 MiB free for 256 MiB of disk
# holding 36 MiB of data.
new_vm 44 32
sum=$(sha "$T/hosts/hostA/ds/0/44/disk.0")
mkdir -p "$T/hosts/hostB/ds/101"
on_host hostB mount -t tmpfs -o size=24m ferry-test "$DS/101"
cleanup "on_host hostB umount -l $DS/101"
prolog_migr 44 hostA hostB 0 101
[ "$TM_RC" != 0 ] || fail "the migration to a full datastore succeeded"
grep -qF "not enough space" "$T/tm.err" || { cat "$T/tm.err"; fail "the message does not say the destination is full"; }
echo "ok: destination full: $(grep ERROR "$T/tm.err" | tail -1)"
[ -z "$(on_host hostB ls -A "$DS/101")" ] || fail "the full datastore holds something after the failure"
[ "$(sha "$T/hosts/hostA/ds/0/44/disk.0")" = "$sum" ] || fail "VM 44's disk changed"
on_host hostA test -f "$DS/0/44/disk.1" || fail "VM 44's context CD is gone"
tm_assert_clean
echo "ok: failures leave the VM's disk as it was"
