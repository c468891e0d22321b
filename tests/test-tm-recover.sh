#!/usr/bin/env bash
# A clone before convergence resumes from its map: every process of the clone on the
# destination host killed (kill -9 of the whole process group, as a crash or a reboot leaves
# it; the dead mount removed): the source's keeper notices and starts it again on its map;
# everything of the move killed on both hosts: `ferry-host.sh resume DATASTORES` on each (what a
# host runs after a reboot) starts exports and clones again.  Both converge to the source's
# bytes (the first copied regions are not read from the source again), the source goes, nothing
# is left.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-tm.sh"
tm_setup
tm_config FERRY_RATE 1M

new_vm() {
  local d=$T/hosts/hostA/ds/0/$1
  mkdir -p "$d"
  truncate -s 64M "$d/disk.0"
  head -c $((6 << 20)) /dev/urandom | dd of="$d/disk.0" conv=notrunc status=none
  cp "$d/disk.0" "$T/disk-$1"
  vm_xml "$1"
}
kill_group() { # HOST PIDFILE: kill -9 the process group of the process PIDFILE names
  local pid pgid
  pid=$(on_host "$1" cat "$2")
  pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
  kill -KILL -- "-$pgid"
}
hydrated() { ferry_json hostB "$1" regions_hydrated; }

# --- the clone's processes die; the keeper restarts it.
new_vm 42
S=$DS/0/42 ctl=$DS/0/42/.ferry/disk.0/ctl
tm_transfer_ok "MV ferry hostA:$S hostB:$S 42 0"
for ((i = 0; i < 100; i++)); do [ "$(hydrated "$ctl")" -gt 16 ] && break; sleep 0.1; done
before=$(hydrated "$ctl")
kill_group hostB "$S/.ferry/disk.0/pid"
echo "killed every process of the clone on hostB ($before regions hydrated)"
for ((i = 0; i < 300; i++)); do
  p=$(ferry_json hostB "$ctl" pid 2>/dev/null || true)
  [ -n "$p" ] && break
  sleep 0.1
done
[ -n "$p" ] || { cat "$T/hosts/hostA/ds/0/42/.ferry/export.0/keeper.log" >&2; fail "the clone was not restarted"; }
after=$(hydrated "$ctl")
echo "the keeper restarted it: $after regions hydrated at the restart"
[ "$after" -ge $((before - 16)) ] || fail "the restarted clone lost its map ($before -> $after)"
on_host hostB dd if="$S/disk.0" of=/dev/null bs=4096 count=1 status=none || fail "the restarted clone does not serve"
wait_plain hostB "$S/disk.0"
wait_gone hostA "$S"
cmp "$T/hosts/hostB/ds/0/42/disk.0" "$T/disk-42" || fail "VM 42's destination differs from its source"
tm_assert_clean
echo "ok: a clone killed on hostB was restarted on its map by the source's keeper"

# --- everything of the move killed on both hosts; resume on each.
new_vm 43
S=$DS/0/43 ctl=$DS/0/43/.ferry/disk.0/ctl
tm_transfer_ok "MV ferry hostA:$S hostB:$S 43 0"
sleep 1
kill_group hostA "$S/.ferry/export.0/keeper.pid"
kill_group hostA "$S/.ferry/export.0/nbd.pid"
kill_group hostB "$S/.ferry/disk.0/pid"
on_host hostB umount -l "$S/.ferry/disk.0/mnt" # a reboot leaves no mount
echo "killed every process of the move on hostA and hostB"
host_resume() {
  on_host "$1" env FERRY_BIN_DIR="$T/bin" FERRY_HOST_SSH="$T/bin/ssh" FERRY_HOST_NAME="$1" \
    bash "$REMOTES/tm/ferry/ferry-host.sh" resume "$DS/0"
}
host_resume hostA | tee "$T/resume-a"
grep -q "export $S/.ferry/export.0: started again" "$T/resume-a" || fail "resume did not restart the export"
host_resume hostB | tee "$T/resume-b"
grep -q "clone $S/.ferry/disk.0: started again" "$T/resume-b" || fail "resume did not restart the clone"
wait_plain hostB "$S/disk.0"
wait_gone hostA "$S"
cmp "$T/hosts/hostB/ds/0/43/disk.0" "$T/disk-43" || fail "VM 43's destination differs from its source"
tm_assert_clean
echo "ok: after both hosts lost every process, resume on each finished the move"
