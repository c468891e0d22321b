#!/usr/bin/env bash
# The ferry TM driver's mv with the lines TransferManager.cc writes for a cold migration
# (prolog_migr: a disk line for the image disk's driver, then the directory line for the system
# datastore's): for a 1 GiB and a 64 GiB sparse disk it returns as soon as the destination host
# serves the disk's first block through DST_PATH (the figures are printed, not asserted); the
# clone's control socket is DST_DIR/.ferry/disk.0/ctl; the rest of the directory is copied;
# after convergence DST_PATH is a plain file with the source's bytes, the source directory is
# gone and nothing of the driver runs.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-tm.sh"
tm_setup
tm_config FERRY_RATE 1M

# make_vm ID SIZE: VM ID's directory on hostA in system datastore 0: a sparse raw disk.0 of
# SIZE with data at its start, middle and end, the context CD disk.1, the deployment file.
make_vm() {
  local id=$1 size=$2 d=$T/hosts/hostA/ds/0/$1
  mkdir -p "$d"
  truncate -s "$size" "$d/disk.0"
  head -c $((4 << 20)) /dev/urandom | dd of="$d/disk.0" conv=notrunc status=none
  head -c $((1 << 20)) /dev/urandom | dd of="$d/disk.0" bs=1M seek=$(($(numfmt --from=iec "$size") / 2 >> 20)) conv=notrunc status=none
  head -c 65536 /dev/urandom | dd of="$d/disk.0" bs=65536 seek=$(($(numfmt --from=iec "$size") / 65536 - 1)) conv=notrunc status=none
  head -c 372736 /dev/urandom >"$d/disk.1"
  cp "$d/disk.1" "$T/disk1-$id"
  head -c $((4 << 20)) "$d/disk.0" >"$T/head-$id"
  echo "<domain>one-$id</domain>" >"$d/deployment.0"
  vm_xml "$id"
}

cold_migrate() {
  local id=$1
  tm_transfer_ok "MV.ferry ssh hostA:$DS/0/$id/disk.0 hostB:$DS/0/$id/disk.0 $id 1" \
    "MV ferry hostA:$DS//0/$id hostB:$DS//0/$id $id 0"
}

declare -A before
for spec in "42 1G" "43 64G"; do
  read -r id size <<<"$spec"
  make_vm "$id" "$size"
  before[$id]=$(tm_sha "$T/hosts/hostA/ds/0/$id/disk.0")
  cold_migrate "$id"
  echo "mv of a $size sparse disk (VM $id): returned in $TM_SECONDS s (figure, not asserted)"
  d=$DS/0/$id
  on_host hostB test -L "$d/disk.0" || fail "hostB:$d/disk.0 is not the clone's symlink"
  [ "$(on_host hostB readlink "$d/disk.0")" = "$d/.ferry/disk.0/mnt/disk" ] || fail "the symlink points elsewhere"
  on_host hostB cmp -s "$d/disk.1" "$T/disk1-$id" || fail "the context CD was not copied"
  on_host hostB test -f "$d/deployment.0" || fail "deployment.0 was not copied"
  on_host hostA test ! -e "$T/hosts/hostA/ds/0/$id/disk.1" || fail "hostA still has the copied disk.1"
  host_ferry hostB status "$d/.ferry/disk.0/ctl" | grep -E "state|progress"
done
grep -q "^mv hostA:$DS/0/42/disk.0 hostB:$DS/0/42/disk.0 42 1$" "$REMOTES/calls.log" ||
  fail "the disk line did not reach the ssh driver"
! grep -q "^mv hostA:$DS//0/42 " "$REMOTES/calls.log" || fail "the directory line went to the base driver"

# Reads through DST_PATH while hydrating equal the source's bytes.
on_host hostB dd if="$DS/0/42/disk.0" bs=1M count=4 status=none | cmp - "$T/head-42" ||
  fail "reading hostB:$DS/0/42/disk.0 differs from the source"

for id in 42 43; do
  d=$DS/0/$id
  wait_plain hostB "$d/disk.0"
  wait_gone hostB "$d/.ferry" # the clone exited (nothing had it open) and tidied up
  wait_gone hostA "$d"
  [ "$(tm_sha "$T/hosts/hostB/ds/0/$id/disk.0")" = "${before[$id]}" ] || fail "VM $id: the destination differs from the source"
done
tm_assert_clean
echo "ok: both disks converged to plain files, the sources are gone, nothing runs"

# A disk line that comes to ferry itself (a disk whose TM_MAD is ferry) clones that disk; the
# directory line then copies the rest.
make_vm 44 256M
sed -i 's|<TM_MAD><!\[CDATA\[ssh\]\]></TM_MAD>|<TM_MAD><![CDATA[ferry]]></TM_MAD>|' "$T/vm-44.xml"
tm_transfer_ok "MV ferry hostA:$DS/0/44/disk.0 hostB:$DS/0/44/disk.0 44 0" \
  "MV ferry hostA:$DS/0/44 hostB:$DS/0/44 44 0"
on_host hostB test -L "$DS/0/44/disk.0" -a -f "$DS/0/44/disk.1" || fail "VM 44 was not moved"
wait_gone hostA "$DS/0/44"
wait_plain hostB "$DS/0/44/disk.0"
tm_assert_clean

# Nothing to clone (a VM without a raw disk): the base driver moves the directory.
mkdir -p "$T/hosts/hostA/ds/0/45" && echo x >"$T/hosts/hostA/ds/0/45/disk.1"
vm_xml 45
tm_transfer_ok "MV ferry hostA:$DS/0/45 hostB:$DS/0/45 45 0"
grep -q "^mv hostA:$DS/0/45 hostB:$DS/0/45 45 0$" "$REMOTES/calls.log" || fail "not delegated to ssh/mv"
on_host hostB test -f "$DS/0/45/disk.1" || fail "the base driver did not move VM 45"
echo "ok: a directory without a disk to clone went to the base driver"
