#!/usr/bin/env bash
# A live move survives kill -9 of its pieces while the guest writes:
#   - ferry live-move killed while the guest is paused: its guardian resumes the guest;
#     --resume carries on;
#   - the clone server killed: ferry live-move starts it again on its map; qemu's nbd client
#     (reconnect-delay) holds the guest's I/O meanwhile instead of failing it;
#   - ferry live-move killed: the guest keeps running on the clone, whose server outlives it;
#   - the clone server killed again, with no ferry around: the guest's I/O waits;
#   - ferry live-move --resume WORKDIR restarts the server on its map and finishes the move.
# Nothing the guest acknowledged is lost, the old image is not written after the switch.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-guest.sh"

img=$T/disk.img dest=$T/dest.img work=$T/work
guest_disk "$img" 128M 8
guest_start g loop -- \
  -blockdev "{\"driver\":\"file\",\"node-name\":\"file0\",\"filename\":\"$img\"}" \
  -blockdev '{"driver":"raw","node-name":"fmt0","file":"file0"}' \
  -device virtio-blk-pci,drive=fmt0,id=vd0
guest_wait g 'ferry-guest: ack 10' 120
acks() { grep -c 'ferry-guest: ack' "$GUEST_LOG"; }
server_pid() { cat "$work/nbd.pid"; }


# 0. ferry killed (kill -9) at the worst moment, the guest paused: the guardian resumes it on
#    its own disk; --resume takes over from there.
rc=0
FERRY_LIVE_FAULT=die-after-stop "$FERRY" live-move --qmp "$GUEST_QMP" --device vd0 --to "$dest" \
  --workdir "$work" --rate 256K >"$T/killed.out" 2>&1 || rc=$?
[ $rc = 137 ] || { cat "$T/killed.out" >&2; fail "ferry was not killed ($rc)"; }
for ((i = 0; i < 200; i++)); do
  [ "$(qmp "$GUEST_QMP" query-status | json_key /dev/stdin status)" = running ] && break
  sleep 0.05
done
[ "$(qmp "$GUEST_QMP" query-status | json_key /dev/stdin status)" = running ] || fail "the guest stayed paused"
[ "$(qmp_disk_file "$GUEST_QMP" vd0)" = "$img" ] || fail "vd0 not on its image after the kill"
grep -q '"phase": "switching"' "$work/state.json" || fail "state is not switching"
guest_wait g "ferry-guest: ack $(($(acks) + 10))" 60

# Slow enough that the copy is still running through everything below.
"$FERRY" live-move --resume "$work" >"$T/move.out" 2>"$T/move.err" &
mover=$!
track_pid $mover
wait_phase "$work/state.json" switched 60
old_sha=$(sha "$img")
guest_wait g "ferry-guest: ack $(($(acks) + 10))" 60

# 1. The clone server dies; ferry starts it again; the guest carries on.
pid1=$(server_pid)
kill -9 "$pid1"
for ((i = 0; i < 400; i++)); do
  [ -s "$work/nbd.pid" ] && [ "$(server_pid)" != "$pid1" ] && break
  sleep 0.05
done
[ "$(server_pid)" != "$pid1" ] || fail "ferry did not restart the clone server"
grep -q 'starting it again on its map' "$T/move.out" || fail "no restart message"
guest_wait g "ferry-guest: ack $(($(acks) + 10))" 60

# 2. ferry live-move dies: the guest still runs and writes on the clone.
kill -9 $mover
wait $mover 2>/dev/null || true
kill -0 "$(server_pid)" || fail "the clone server died with ferry"
guest_wait g "ferry-guest: ack $(($(acks) + 10))" 60
grep -q "\"phase\": \"switched\"" "$work/state.json" || { cat "$work/state.json" "$T/move.out" >&2; fail "state is not switched"; }

# 3. The clone server dies with no ferry to restart it: the guest's I/O waits (qemu holds it).
kill -9 "$(server_pid)"
before=$(acks)
guest_wait g "ferry-guest: hb" 10
sleep 1
echo "acknowledged writes while no server ran: $(($(acks) - before))"

# 4. --resume restarts the server on its map and finishes the move.
"$FERRY" live-move --resume "$work" --json >"$T/resume.json" 2>"$T/resume.err" &
resumer=$!
track_pid $resumer
for ((i = 0; i < 400; i++)); do [ -S "$work/nbd.ctl" ] && "$FERRY" status "$work/nbd.ctl" >/dev/null 2>&1 && break; sleep 0.05; done
"$FERRY" set-rate "$work/nbd.ctl" 0 >/dev/null || true
guest_wait g "ferry-guest: ack $(($(acks) + 10))" 60
rc=0
wait $resumer || rc=$?
[ $rc = 0 ] || { cat "$T/resume.err" >&2; fail "--resume exited $rc"; }
cat "$T/resume.json"
[ "$(json_key "$T/resume.json" final_image)" = "$dest" ] || fail "final_image"
[ "$(json_key "$T/resume.json" server_restarts)" -ge 1 ] || fail "server_restarts"
[ "$(qmp_disk_file "$GUEST_QMP" vd0)" = "$dest" ] || fail "QMP: vd0 not on $dest"
[ ! -e "$work" ] || fail "workdir left behind"
assert_no_process "$work"

guest_send g stop
guest_wait_exit g 120
guest_gaps g
guest_check_disk g "$dest"
[ "$(sha "$img")" = "$old_sha" ] || fail "the old image was written after the switch"
echo "ok: kill -9 of the clone server and of ferry live-move, then --resume"
