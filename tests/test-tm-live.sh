#!/usr/bin/env bash
# Live migration to another host and its own storage (system datastore 0 on hostA to 100 on
# hostB: the KVM driver's DS_LIVE_MIGRATION) through the ferry TM driver, as
# one_vmm_exec.rb drives it: premigrate (the VM's XML in base64 on stdin), the hypervisor's
# migration, then postmigrate, or failmigrate when the migration fails.  Two qemu processes: the
# source guest keeps writing on hostA; the destination qemu is started on hostB with -incoming on
# DST_PATH, the clone premigrate prepared with its copy held back; QMP migrate; the source qemu
# quits as libvirt has it; postmigrate releases the copy; the guest keeps running and writing on
# hostB while its disk hydrates.  After convergence DST_PATH is a plain file with every write the
# guest acknowledged on either host, e2fsck clean, the source is gone, nothing of ferry runs.
# Before that, the failures: the destination full, the source host unreachable, a migration
# that fails after premigrate: the message names the problem, the guest runs on, its disk
# untouched, nothing left on hostB.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-guest.sh"
. "$TESTS_DIR/lib-tm.sh"
tm_setup
tm_config FERRY_RATE 2M

s=$DS/0/42 d=$DS/100/42 ctl=$DS/100/42/.ferry/disk.0/ctl
mkdir -p "$T/hosts/hostA/ds/0/42"
guest_disk "$T/hosts/hostA/ds/0/42/disk.0" 256M 16
head -c 65536 /dev/urandom >"$T/hosts/hostA/ds/0/42/disk.1"
vm_xml 42
# The migration's history record (oned adds it before the hypervisor's migrate): to hostB and
# system datastore 100; the driver finds the directory it leaves in the record before.
sed -i 's|</HISTORY></HISTORY_RECORDS>|</HISTORY><HISTORY><SEQ>1</SEQ><HOSTNAME>hostB</HOSTNAME><DS_ID>100</DS_ID><TM_MAD><![CDATA[ferry]]></TM_MAD></HISTORY></HISTORY_RECORDS>|' "$T/vm-42.xml"
xml64=$(base64 -w0 "$T/vm-42.xml")
guest_on hostA src loop -- -drive "file=$s/disk.0,format=raw,cache=none,if=virtio"
guest_wait src 'ferry-guest: ack 10' 180

migrate_action() { # ACTION: one of the TM's migrate actions, as one_vmm_exec.rb runs it
  tm "$1" hostA hostB "$d" 42 100 <<<"$xml64"
}
acks() { grep -c ' ferry-guest: ack ' "$(guest_log "$1")"; }
still_writing() { # the source guest goes on writing
  local n
  n=$(acks src)
  guest_wait src "ferry-guest: ack $((n + 5))\$" 60
}
nothing_on_hostB() {
  on_host hostB test ! -e "$d" || { on_host hostB ls -la "$d" >&2; fail "hostB holds $d after the failure"; }
  tm_assert_clean
}

# --- the destination full (a 24 MiB datastore for 36 MiB of disk data).
on_host hostB mkdir -p "$DS/100"
on_host hostB mount -t tmpfs -o size=24m ferry-test "$DS/100"
migrate_action premigrate
on_host hostB umount "$DS/100"
[ "$TM_RC" != 0 ] || fail "premigrate to a full datastore succeeded"
grep -qF "not enough space" "$T/tm.err" || { cat "$T/tm.err"; fail "the message does not say the destination is full"; }
echo "ok: destination full: $(grep ERROR "$T/tm.err" | tail -1)"
still_writing
nothing_on_hostB

# --- the source host unreachable.
host_down hostA
migrate_action premigrate
host_up hostA
[ "$TM_RC" != 0 ] || fail "premigrate from an unreachable host succeeded"
grep -qF "hostA is unreachable by ssh" "$T/tm.err" || { cat "$T/tm.err"; fail "the message does not name the unreachable host"; }
echo "ok: source unreachable: $(grep ERROR "$T/tm.err" | tail -1)"
still_writing
nothing_on_hostB

# --- premigrate works, the migration fails (the destination qemu died): failmigrate.
migrate_action premigrate
[ "$TM_RC" = 0 ] || { cat "$T/tm.err"; fail "premigrate failed"; }
[ "$(ferry_json hostB "$ctl" held)" = True ] || fail "premigrate's clone is not held"
guest_on hostB dead loop -- -drive "file=$d/disk.0,format=raw,cache=none,if=virtio" -incoming "unix:$T/dead.sock"
kill -9 "$(guest_pid dead)"
unset "_guest_pid[dead]"
migration_status() {
  qmp "$(guest_qmp src)" query-migrate | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin).get("status"))'
}
qmp "$(guest_qmp src)" migrate "{\"uri\":\"unix:$T/dead.sock\"}" >/dev/null 2>"$T/qmp.err" || true
for ((i = 0; i < 100; i++)); do
  st=$(migration_status)
  [ "$st" = failed ] || [ -s "$T/qmp.err" ] && break
  sleep 0.1
done
[ "$st" = failed ] || [ -s "$T/qmp.err" ] || fail "the migration to a dead qemu did not fail ($st)"
echo "the migration failed as planned (status $st)"
migrate_action failmigrate
[ "$TM_RC" = 0 ] || { cat "$T/tm.err"; fail "failmigrate failed"; }
still_writing
nothing_on_hostB
on_host hostA test -f "$s/disk.1" -a ! -e "$s/.ferry" || fail "hostA's VM directory was changed"
echo "ok: a failed migration: hostB cleaned, the guest writes on at hostA"

# --- the live migration.
migrate_action premigrate
[ "$TM_RC" = 0 ] || { cat "$T/tm.err"; fail "premigrate failed"; }
echo "premigrate returned in $TM_SECONDS s (figure, not asserted)"
on_host hostB test -L "$d/disk.0" -a -f "$d/disk.1" || fail "premigrate did not prepare hostB:$d"
guest_on hostB dst loop -- -drive "file=$d/disk.0,format=raw,cache=none,if=virtio" -incoming "unix:$T/mig.sock"
for ((i = 0; i < 100; i++)); do [ -S "$T/mig.sock" ] && break; sleep 0.05; done
qmp "$(guest_qmp src)" migrate "{\"uri\":\"unix:$T/mig.sock\"}" >/dev/null
for ((i = 0; i < 600; i++)); do
  st=$(migration_status)
  [ "$st" = completed ] && break
  [ "$st" = failed ] && fail "the memory migration failed"
  sleep 0.1
done
[ "$st" = completed ] || fail "the memory migration did not complete"
[ "$(ferry_json hostB "$ctl" held)" = True ] || fail "the clone was released before postmigrate"
qmp "$(guest_qmp src)" quit >/dev/null 2>&1 || true
wait "$(guest_pid src)" 2>/dev/null || true
unset "_guest_pid[src]"
migrate_action postmigrate
[ "$TM_RC" = 0 ] || { cat "$T/tm.err"; fail "postmigrate failed"; }
[ "$(ferry_json hostB "$ctl" held)" = False ] || fail "postmigrate did not release the clone"
last=$(awk '$3 == "ack" { n = $4 } END { print n + 0 }' "$(guest_log src)")
guest_wait dst "ferry-guest: ack $((last + 30))\$" 120
state=$(ferry_json hostB "$ctl" state)
echo "migrated after write $last: the guest wrote $(acks dst) more records on hostB; its clone is $state"
[ "$state" = hydrating ] || fail "the disk did not hydrate after the release ($state)"
on_host hostA test ! -e "$s/disk.1" || fail "postmigrate left hostA's copied files"
last_src=$(awk '$3 == "hb" { t = $1 } END { print t }' "$(guest_log src)")
first_dst=$(awk '$3 == "hb" { print $1; exit }' "$(guest_log dst)")
echo "heartbeats: last on hostA $last_src, first on hostB $first_dst: $(awk -v a="$last_src" -v b="$first_dst" 'BEGIN { printf "%.3f", b - a }') s apart (figure, not asserted)"
guest_send dst stop
guest_wait_exit dst 180
# What the guest last saw, read through DST_PATH (the clone, if it has not converged yet).
seen=$(on_host hostB sha256sum "$d/disk.0" | cut -d' ' -f1)

host_ferry hostB set-rate "$ctl" 0 >/dev/null 2>&1 || true # (it may have converged and exited)
wait_plain hostB "$d/disk.0"
[ "$(on_host hostB sha256sum "$d/disk.0" | cut -d' ' -f1)" = "$seen" ] ||
  fail "the plain file differs from what the guest last saw through the clone"
echo "ok: hostB:$d/disk.0 is a plain file, byte-identical to what the guest last saw"
tm_assert_clean
wait_gone hostA "$s"
cat "$(guest_log src)" "$(guest_log dst)" >"$T/both.serial"
_guest_log[both]=$T/both.serial
guest_check_disk both "$T/hosts/hostB/ds/100/42/disk.0"
echo "ok: live migration hostA -> hostB with its disk; converged, nothing left"
