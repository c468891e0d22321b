#!/usr/bin/env bash
# ferry live-move of a running, writing guest (raw disk, -blockdev): the guest's heartbeat
# continues, the move reports its pause, the old image is not written after the switch,
# QMP shows the guest on DEST, no ferry process is left; the guest keeps writing on DEST and
# after its power-off DEST is a clean ext4 with the generated files, the guest's files and
# every write it acknowledged.
. "$TESTS_DIR/functions.sh"
. "$TESTS_DIR/lib-guest.sh"

img=$T/disk.img dest=$T/dest.img work=$T/work
guest_disk "$img" 256M 16
guest_start g loop -- \
  -blockdev "{\"driver\":\"file\",\"node-name\":\"file0\",\"filename\":\"$img\"}" \
  -blockdev '{"driver":"raw","node-name":"fmt0","file":"file0"}' \
  -device virtio-blk-pci,drive=fmt0,id=vd0
guest_wait g 'ferry-guest: ack 20' 120

# 8 MiB/s: the copy of ~35 MiB of data takes seconds, the guest writing all along.
"$FERRY" live-move --qmp "$GUEST_QMP" --device vd0 --to "$dest" --workdir "$work" --rate 8M \
  --json >"$T/move.json" 2>"$T/move.err" &
mover=$!
track_pid $mover
wait_phase "$work/state.json" 'switched|converged|pivoted' 60
old_sha=$(sha "$img") # from the switch on, nothing writes the old image
n=$(grep -c 'ferry-guest: ack' "$GUEST_LOG")
guest_wait g "ferry-guest: ack $((n + 20))" 60 # writing on the clone
rc=0
wait $mover || rc=$?
[ $rc = 0 ] || { cat "$T/move.err" "$work/nbd.log" >&2 2>/dev/null; fail "live-move exited $rc"; }
cat "$T/move.json"
[ "$(json_key "$T/move.json" ok)" = True ] || fail "live-move reported failure"
[ "$(json_key "$T/move.json" final_image)" = "$dest" ] || fail "final_image"
for k in paused_seconds switched_at converged_seconds bytes_copied bytes_fetched bytes_skipped; do
  json_key "$T/move.json" $k >/dev/null || fail "no $k in --json"
done
[ "$(json_key "$T/move.json" bytes_copied)" -gt 0 ] || fail "nothing copied"
echo "pause: $(json_key "$T/move.json" paused_seconds) s (ferry: stop -> cont), converged $(json_key "$T/move.json" converged_seconds) s after the switch"

[ "$(qmp_disk_file "$GUEST_QMP" vd0)" = "$dest" ] || fail "QMP: vd0 is on $(qmp_disk_file "$GUEST_QMP" vd0), not $dest"
[ ! -e "$work" ] || fail "workdir $work left behind"
assert_no_process "$work"
n=$(grep -c 'ferry-guest: ack' "$GUEST_LOG")
guest_wait g "ferry-guest: ack $((n + 20))" 60 # and on DEST
guest_send g stop
guest_wait_exit g 120
guest_gaps g
[ "$HB_COUNT" -gt 50 ] || fail "only $HB_COUNT heartbeats"
guest_check_disk g "$dest"
[ "$(sha "$img")" = "$old_sha" ] || fail "the old image was written after the switch"
echo "ok: live move of a running guest"
